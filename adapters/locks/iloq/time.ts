/**
 * Time-limit slot dates in iLOQ are wall-clock strings (`yyyy-MM-ddTHH:mm:ss`) in the locking
 * system's time zone, which the LockGroup names with a Windows zone id
 * (`TimeZoneStandardName`, e.g. "FLE Standard Time"). Node's ICU only knows IANA ids, hence the
 * table below (the common CLDR windowsZones "001" mappings).
 *
 * When the zone is unknown we fall back to UTC-12 on purpose: "now" written as UTC-12 wall time
 * is not later than now in any zone, so a leaver's end date can only land early, never late;
 * read back the same way, an end date is reported no earlier than it really is (conservative
 * for residual-exposure reporting).
 */

const windowsToIana: Record<string, string> = {
  'Dateline Standard Time': 'Etc/GMT+12',
  UTC: 'UTC',
  'Coordinated Universal Time': 'UTC',
  'GMT Standard Time': 'Europe/London',
  'Greenwich Standard Time': 'Atlantic/Reykjavik',
  'W. Europe Standard Time': 'Europe/Berlin',
  'Central Europe Standard Time': 'Europe/Budapest',
  'Central European Standard Time': 'Europe/Warsaw',
  'Romance Standard Time': 'Europe/Paris',
  'W. Central Africa Standard Time': 'Africa/Lagos',
  'GTB Standard Time': 'Europe/Bucharest',
  'E. Europe Standard Time': 'Europe/Chisinau',
  'FLE Standard Time': 'Europe/Helsinki',
  'Kaliningrad Standard Time': 'Europe/Kaliningrad',
  'South Africa Standard Time': 'Africa/Johannesburg',
  'Israel Standard Time': 'Asia/Jerusalem',
  'Turkey Standard Time': 'Europe/Istanbul',
  'Russian Standard Time': 'Europe/Moscow',
  'Arab Standard Time': 'Asia/Riyadh',
  'Arabian Standard Time': 'Asia/Dubai',
  'India Standard Time': 'Asia/Kolkata',
  'China Standard Time': 'Asia/Shanghai',
  'Singapore Standard Time': 'Asia/Singapore',
  'Tokyo Standard Time': 'Asia/Tokyo',
  'Korea Standard Time': 'Asia/Seoul',
  'AUS Eastern Standard Time': 'Australia/Sydney',
  'E. Australia Standard Time': 'Australia/Brisbane',
  'W. Australia Standard Time': 'Australia/Perth',
  'New Zealand Standard Time': 'Pacific/Auckland',
  'Atlantic Standard Time': 'America/Halifax',
  'Eastern Standard Time': 'America/New_York',
  'Central Standard Time': 'America/Chicago',
  'Mountain Standard Time': 'America/Denver',
  'US Mountain Standard Time': 'America/Phoenix',
  'Pacific Standard Time': 'America/Los_Angeles',
  'Alaskan Standard Time': 'America/Anchorage',
  'Hawaiian Standard Time': 'Pacific/Honolulu',
  'E. South America Standard Time': 'America/Sao_Paulo',
};

const FALLBACK_ZONE = 'Etc/GMT+12';
const LOCAL_FORMAT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})/;

function isIanaZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export class LockGroupClock {
  /** IANA zone used for conversions. */
  readonly zone: string;
  /** False when the lock group's zone was not recognised and the UTC-12 fallback is in use. */
  readonly exact: boolean;
  private readonly fmt: Intl.DateTimeFormat;
  private readonly offsets = new Map<number, number>();

  constructor(timeZoneStandardName: string | null | undefined) {
    const name = (timeZoneStandardName ?? '').trim();
    const mapped = windowsToIana[name] ?? (name && isIanaZone(name) ? name : undefined);
    this.zone = mapped ?? FALLBACK_ZONE;
    this.exact = mapped !== undefined;
    this.fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: this.zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
  }

  /** `yyyy-MM-ddTHH:mm:ss` wall time in the lock group's zone. */
  format(date: Date): string {
    const t = date.getTime();
    return new Date(t + this.offsetMs(t)).toISOString().slice(0, 19);
  }

  /** Wall time in the lock group's zone to an absolute instant; undefined when unparseable. */
  toDate(local: string): Date | undefined {
    const m = LOCAL_FORMAT.exec(local);
    if (!m) return undefined;
    const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
    const asUtc = Date.UTC(y, mo - 1, d, h, mi, s);
    // Two passes settle the offset also across a DST change.
    let guess = asUtc - this.offsetMs(asUtc);
    guess = asUtc - this.offsetMs(guess);
    return new Date(guess);
  }

  /** Normalises any slot date string to the fixed-width local format (drops fractions/offsets). */
  normalise(local: string | null | undefined): string | undefined {
    const m = local ? LOCAL_FORMAT.exec(local) : null;
    return m ? m[0] : undefined;
  }

  /**
   * The zone's offset from UTC at `instant`. Zone offsets change on whole minutes (since the end of
   * local mean time), so ICU is asked once per minute: formatToParts was ~2 % of the lock-system
   * thread's CPU under load, where every leaver formats "now" and reads end dates back.
   */
  private offsetMs(instant: number): number {
    const minute = Math.floor(instant / 60_000);
    let offset = this.offsets.get(minute);
    if (offset === undefined) {
      const p: Record<string, string> = {};
      // Throws a RangeError for an invalid date, as formatting one always did.
      for (const part of this.fmt.formatToParts(new Date(minute * 60_000))) p[part.type] = part.value;
      offset = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second)) - minute * 60_000;
      if (this.offsets.size >= OFFSETS_KEPT) this.offsets.clear();
      this.offsets.set(minute, offset);
    }
    return offset;
  }
}

/** Minutes whose offset a clock keeps (now, and the few end dates a leaver reads back). */
const OFFSETS_KEPT = 64;
