/**
 * Runs `fn` over `items` in chunks that yield to the event loop in between: offering thousands
 * of jobs in one go would hold up every request (and the first jobs' own work) meanwhile.
 */
export async function inChunks<T>(items: T[], size: number, fn: (part: T[]) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    await fn(items.slice(i, i + size));
  }
}
