/**
 * Summaries of repeated measurements: median with min and max (the spread), never a mean, since one slow
 * repeat on a shared machine says nothing about the path.
 */
import type { Spread } from "./types.ts";

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function spread(xs: readonly number[]): Spread {
  if (xs.length === 0) return { median: NaN, min: NaN, max: NaN };
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** (max - min) / median, as a fraction: how noisy the repeats were. */
export function relativeSpread(s: Spread): number {
  return s.median > 0 ? (s.max - s.min) / s.median : NaN;
}
