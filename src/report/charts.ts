/**
 * The report's charts: vega-lite specifications built from the bench rows, rendered to SVG in Node by vega
 * (no browser, no hand-drawn graphics). A chart with no data in the run is left out, never drawn empty.
 */
import * as vega from "vega";
import * as vl from "vega-lite";
import type { TopLevelSpec } from "vega-lite";

export type Datum = Record<string, string | number | null>;

export interface ChartSpec {
  /** File name without extension. */
  name: string;
  title: string;
  spec: TopLevelSpec;
}

const BASE = {
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  config: {
    font: "sans-serif",
    axis: { labelFontSize: 11, titleFontSize: 12 },
    legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
    title: { fontSize: 14 },
  },
  background: "white",
} as const;

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Grouped bars: one group per `x` category, one bar per `color` inside it, optional facet columns. */
export function barChart(o: {
  name: string;
  title: string;
  data: Datum[];
  x: string;
  /** Axis title; null for none (default: the field name). */
  xTitle?: string | null;
  y: string;
  yTitle: string;
  color: string;
  colorTitle?: string;
  column?: string;
  log?: boolean;
}): ChartSpec {
  const encoding: Record<string, unknown> = {
    x: {
      field: o.x,
      type: "nominal",
      sort: null,
      title: o.xTitle === undefined ? o.x : o.xTitle,
      axis: { labelAngle: -30, labelLimit: 200 },
    },
    xOffset: { field: o.color },
    // No stacking: a log-scale bar must start at the domain's low end, not at zero (log 0 = -inf).
    y: { field: o.y, type: "quantitative", title: o.yTitle, stack: null, ...(o.log ? { scale: { type: "log" } } : {}) },
    color: { field: o.color, type: "nominal", title: o.colorTitle ?? o.color },
    tooltip: [
      { field: o.x, type: "nominal" },
      { field: o.color, type: "nominal" },
      { field: o.y, type: "quantitative", format: ".3~s" },
    ],
  };
  if (o.column) encoding.column = { field: o.column, type: "nominal", title: null };
  const spec = {
    ...BASE,
    title: o.title,
    data: { values: o.data },
    mark: { type: "bar" },
    encoding,
    width: { step: 14 },
    height: 220,
  } as unknown as TopLevelSpec;
  return { name: o.name, title: o.title, spec };
}

/** Lines with points: `y` against `x` (log2 when asked), one line per `color`. */
export function lineChart(o: {
  name: string;
  title: string;
  data: Datum[];
  x: string;
  xTitle: string;
  y: string;
  yTitle: string;
  color: string;
  colorTitle?: string;
  /** A second grouping shown as the line's dash pattern (and part of the line's identity). */
  dash?: string;
  logX?: boolean;
  logY?: boolean;
}): ChartSpec {
  const spec = {
    ...BASE,
    title: o.title,
    data: { values: o.data },
    mark: { type: "line", point: true },
    encoding: {
      x: { field: o.x, type: "quantitative", title: o.xTitle, ...(o.logX ? { scale: { type: "log", base: 2 } } : {}) },
      y: { field: o.y, type: "quantitative", title: o.yTitle, ...(o.logY ? { scale: { type: "log" } } : {}) },
      color: { field: o.color, type: "nominal", title: o.colorTitle ?? o.color },
      ...(o.dash ? { strokeDash: { field: o.dash, type: "nominal", title: o.dash } } : {}),
      tooltip: [
        { field: o.color, type: "nominal" },
        ...(o.dash ? [{ field: o.dash, type: "nominal" }] : []),
        { field: o.y, type: "quantitative", format: ".3~s" },
      ],
    },
    width: 420,
    height: 260,
  } as unknown as TopLevelSpec;
  return { name: o.name, title: o.title, spec };
}
