/**
 * The sequential round trips an adapter made, read from a simulator's request log taken while
 * the simulator answered every call after `latencyMs`: calls sent together arrive within a few
 * milliseconds of each other, a call sent after an answer arrives at least `latencyMs` after the
 * call it waited for. Each round trip lists its requests as "METHOD path?query".
 */
export function roundTrips(log: ReadonlyArray<{ method: string; path: string; query: string; time: number }>, latencyMs: number): string[][] {
  const byArrival = [...log].sort((a, b) => a.time - b.time);
  const trips: string[][] = [];
  let last = -Infinity;
  for (const r of byArrival) {
    if (r.time - last >= latencyMs / 2) trips.push([]);
    trips.at(-1)!.push(`${r.method} ${r.path}${r.query ? `?${r.query}` : ''}`);
    last = r.time;
  }
  return trips;
}
