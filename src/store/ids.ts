import { randomBytes } from 'node:crypto';

let lastMs = 0;
let seq = 0;
/** Random bytes drawn 4 KiB at a time (one RNG call per 256 ids). */
let pool = Buffer.alloc(0);
let poolAt = 0;

/**
 * A UUIDv7 (RFC 9562): 48-bit milliseconds, then a 12-bit counter that keeps ids minted in the
 * same millisecond in order, then random bits. Lists order by (created_at, id), so ids of
 * one process sort in creation order, and inserts land at the end of the primary-key index.
 * Used for every row id lockstep mints on its hot paths (persons, groups, operations, key
 * changes, tasks): a random id would put each insert on a different index page, and every page a
 * transaction touches is written again at commit and at checkpoint.
 */
export function newId(): string {
  let ms = Date.now();
  if (ms <= lastMs) {
    ms = lastMs;
    if (++seq > 0xfff) {
      ms = ++lastMs;
      seq = 0;
    }
  } else {
    lastMs = ms;
    seq = 0;
  }
  if (poolAt + 16 > pool.length) {
    pool = randomBytes(16 * 256);
    poolAt = 0;
  }
  const b = Buffer.from(pool.subarray(poolAt, (poolAt += 16)));
  b.writeUIntBE(ms, 0, 6);
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
