/* zkserver live monitor: punch times in the viewer's chosen zone, and which day a punch is on.
 *
 * Pure functions (no DOM): the feed and the Today view use them. The server gives each punch
 * `timestamp` (the terminal's local time as sent) and `timestamp_utc` (its instant, ISO 8601
 * with Z; see README "Time you can trust").
 */

const formatters = new Map();

function formatter(zone) {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', {
      timeZone: zone,
      year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(zone, f);
  }
  return f;
}

/** Whether the browser knows an IANA zone name. */
export function validZone(zone) {
  if (!zone) return false;
  try { formatter(zone); return true; } catch (_) { return false; }
}

/** The browser's own zone (e.g. "Europe/Berlin"). */
export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

/** An instant as local "YYYY-MM-DD HH:MM:SS" in `zone`. */
export function inZone(instant, zone) {
  const parts = {};
  for (const p of formatter(zone).formatToParts(instant)) parts[p.type] = p.value;
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

/** A punch's time as shown: the device's own local time when `zone` is '' (the default),
 * else its instant in `zone`. */
export function shownTime(row, zone) {
  if (!zone || !row.timestamp_utc || !validZone(zone)) return row.timestamp;
  const instant = new Date(row.timestamp_utc);
  if (Number.isNaN(instant.getTime())) return row.timestamp;
  return inZone(instant, zone);
}

/** "HH:MM" -> minutes after midnight (0 when not given). */
export function parseDayStart(text) {
  const m = /^(\d{1,2}):(\d{2})$/.exec(String(text || '').trim());
  return m ? Number(m[1]) * 60 + Number(m[2]) : 0;
}

/** The day ("YYYY-MM-DD") a device-local "YYYY-MM-DD HH:MM:SS" belongs to when days start
 * `dayStart` minutes after midnight (the server's --day-starts-at). */
export function dayOf(local, dayStart = 0) {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})/.exec(String(local));
  if (!m) return '';
  const minutes = Number(m[4]) * 60 + Number(m[5]);
  if (minutes >= dayStart) return `${m[1]}-${m[2]}-${m[3]}`;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) - 86400000);
  return d.toISOString().slice(0, 10);
}

/** Today's day for a viewer at `now` (their browser's date, shifted by the day start). */
export function todayOf(now, dayStart = 0) {
  const p = (n) => String(n).padStart(2, '0');
  const local = `${now.getFullYear()}-${p(now.getMonth() + 1)}-${p(now.getDate())} `
    + `${p(now.getHours())}:${p(now.getMinutes())}:00`;
  return dayOf(local, dayStart);
}

/** A fixed-offset zone setting ("+05:30", "+0530", "UTC-3", "-3", "330": hours when at
 * most 14, else minutes), as minutes east of UTC; null for anything else (as the server
 * reads it, README "Time you can trust"). */
export function fixedOffsetMinutes(zone) {
  const m = /^(?:UTC|GMT)?\s*([+-]?)\s*(\d{1,4})(?::(\d{2}))?$/i.exec(String(zone || '').trim());
  if (!m) return null;
  let digits = m[2];
  let extra = m[3];
  if (extra === undefined && digits.length === 4) { extra = digits.slice(2); digits = digits.slice(0, 2); }
  let minutes;
  if (extra !== undefined) minutes = Number(digits) * 60 + Number(extra);
  else minutes = Number(digits) <= 14 ? Number(digits) * 60 : Number(digits);
  if (minutes > 14 * 60 || (extra !== undefined && Number(extra) >= 60)) return null;
  return m[1] === '-' ? -minutes : minutes;
}

/** The wall-clock time "YYYY-MM-DD HH:MM:SS" at `now` in a device's zone setting (an IANA
 * name or a fixed offset); null when the browser cannot tell (no zone: the server's). */
export function localNowIn(zone, now) {
  if (!zone) return null;
  const fixed = fixedOffsetMinutes(zone);
  if (fixed !== null) {
    return new Date(now.getTime() + fixed * 60000).toISOString().slice(0, 19).replace('T', ' ');
  }
  return validZone(zone) ? inZone(now, zone) : null;
}

/** Order of two punches by instant (falls back to the local text). */
export function instantKey(row) {
  return row.timestamp_utc || String(row.timestamp || '').replace(' ', 'T');
}
