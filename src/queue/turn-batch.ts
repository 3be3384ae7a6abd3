/**
 * Collects what callers hand over during one turn of the event loop and passes it on in one
 * call, from a microtask: the changes of a group-committed batch each hand over their part, and
 * Redis gets one request for all of them. Every caller's promise settles with that call.
 */
export class TurnBatch<T> {
  private readonly flush: (items: T[]) => Promise<void> | void;
  private items: T[] = [];
  private flushing: Promise<void> | undefined;

  constructor(flush: (items: T[]) => Promise<void> | void) {
    this.flush = flush;
  }

  add(items: readonly T[]): Promise<void> {
    if (items.length === 0) return Promise.resolve();
    for (const x of items) this.items.push(x);
    this.flushing ??= new Promise<void>((resolve, reject) =>
      queueMicrotask(() => {
        const all = this.items;
        this.items = [];
        this.flushing = undefined;
        try {
          Promise.resolve(this.flush(all)).then(resolve, reject);
        } catch (err) {
          reject(err);
        }
      }),
    );
    return this.flushing;
  }
}
