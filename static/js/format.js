/** @file Small formatting helpers for durations, costs and times. */

/**
 * A duration for people: `850 ms`, `2.4 s`, `3 min 5 s`.
 *
 * @param {number} ms
 * @returns {string}
 */
export function formatDuration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const min = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${min} min ${s} s`;
}

/**
 * A cost in US dollars, with enough digits to show small amounts: `$0.0012`, `$1.25`.
 *
 * @param {number} usd
 * @returns {string}
 */
export function formatCost(usd) {
  if (typeof usd !== 'number' || !Number.isFinite(usd)) return '';
  if (usd === 0) return '$0';
  if (usd >= 1) return `$${usd.toFixed(2)}`;
  return `$${usd.toPrecision(2).replace(/0+$/, '').replace(/\.$/, '')}`;
}

/**
 * A timestamp (seconds since the epoch, or an RFC 3339 string) as a local date and time.
 *
 * @param {number|string} t
 * @returns {string}
 */
export function formatTime(t) {
  if (t === null || t === undefined || t === '') return '';
  const date = typeof t === 'number' ? new Date(t < 1e12 ? t * 1000 : t) : new Date(t);
  if (Number.isNaN(date.getTime())) return '';
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}
