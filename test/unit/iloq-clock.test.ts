import { describe, expect, it } from 'vitest';
import { LockGroupClock } from '../../adapters/locks/iloq/time.ts';

/** Wall time straight from ICU, one formatToParts per call: what the clock must agree with. */
function reference(zone: string, date: Date): string {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(date);
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}:${p.second}`;
}

// Instants around DST changes (both directions), second by second across the change and minutes
// around it, plus ordinary ones.
const transitions = ['2026-03-29T01:00:00Z', '2026-10-25T01:00:00Z', '2026-03-08T07:00:00Z', '2026-11-01T06:00:00Z', '2026-04-04T16:00:00Z', '2026-10-03T16:00:00Z'];
const instants = [
  ...transitions.flatMap((t) => {
    const at = Date.parse(t);
    return [...Array.from({ length: 121 }, (_, i) => at - 60_000 + i * 1000), ...Array.from({ length: 61 }, (_, i) => at - 30 * 60_000 + i * 60_000 + 999)];
  }),
  Date.parse('2026-11-26T12:34:56.789Z'),
  Date.parse('2000-02-29T23:59:59.999Z'),
  Date.parse('2099-12-31T23:59:59Z'),
];

describe('iLOQ lock group clock', () => {
  for (const [windows, iana] of [
    ['FLE Standard Time', 'Europe/Helsinki'],
    ['Eastern Standard Time', 'America/New_York'],
    ['AUS Eastern Standard Time', 'Australia/Sydney'],
    ['India Standard Time', 'Asia/Kolkata'],
  ] as const) {
    it(`formats wall time in ${iana} as ICU does, across DST changes`, () => {
      const clock = new LockGroupClock(windows);
      expect(clock.zone).toBe(iana);
      for (const t of instants) expect(clock.format(new Date(t)), new Date(t).toISOString()).toBe(reference(iana, new Date(t)));
    });

    it(`reads wall time in ${iana} back to the instant it names`, () => {
      const clock = new LockGroupClock(windows);
      for (const t of instants) {
        const wall = clock.format(new Date(t));
        const back = clock.toDate(wall)!;
        // Same wall time (an hour that repeats may come back as either instant), to the second.
        expect(clock.format(back)).toBe(wall);
        expect(back.getTime() % 1000).toBe(0);
      }
    });
  }

  it('falls back to UTC-12 wall time for an unknown zone, and says so', () => {
    const clock = new LockGroupClock('Atlantis Standard Time');
    expect(clock.exact).toBe(false);
    expect(clock.format(new Date('2026-11-26T12:00:00Z'))).toBe('2026-11-26T00:00:00');
  });

  it('refuses an invalid date, and unparseable wall times read back as undefined', () => {
    const clock = new LockGroupClock('W. Europe Standard Time');
    expect(() => clock.format(new Date(Number.NaN))).toThrow(RangeError);
    expect(clock.toDate('not a date')).toBeUndefined();
    expect(clock.normalise('2026-11-26T10:00:00.123+01:00')).toBe('2026-11-26T10:00:00');
  });

  it('stays right past the minutes it keeps', () => {
    const clock = new LockGroupClock('FLE Standard Time');
    const start = Date.parse('2026-10-24T00:00:00Z');
    for (let i = 0; i < 3000; i++) {
      const t = start + i * 61_000;
      expect(clock.format(new Date(t))).toBe(reference('Europe/Helsinki', new Date(t)));
    }
  });
});
