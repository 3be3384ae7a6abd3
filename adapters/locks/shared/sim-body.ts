import type { IncomingMessage } from 'node:http';

/** Why a simulator refused a request body; each simulator answers it in its own wire format. */
export type BodyProblem = 'too_large' | 'invalid_json';

/**
 * A simulator request's JSON body, undefined when it has none (or only whitespace); rejects with
 * `refuse(problem)` when it is larger than `maxBytes` or not JSON.
 *
 * Read with stream events, not `for await`: the async iterator costs a promise and a read() per
 * chunk, and in the pipeline benchmark, where the simulator shares the machine with lockstep,
 * every iLOQ call with a body paid it. A body past the limit is drained, not kept, so the answer
 * can still go out on the same connection.
 */
export function readJsonBody(req: IncomingMessage, maxBytes: number, refuse: (problem: BodyProblem) => Error): Promise<unknown> {
  const length = req.headers['content-length'];
  const hasBody = length !== undefined ? length !== '0' : req.headers['transfer-encoding'] !== undefined;
  if (!hasBody) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBytes) {
        chunks.push(chunk);
        return;
      }
      req.off('data', onData);
      req.off('end', onEnd);
      chunks.length = 0;
      req.resume();
      reject(refuse('too_large'));
    };
    const onEnd = () => {
      const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
      if (!text.trim()) return resolve(undefined);
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(refuse('invalid_json'));
      }
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.once('error', reject);
  });
}
