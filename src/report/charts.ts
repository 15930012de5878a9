/**
 * The report's charts: vega-lite specifications built from the bench rows, rendered to SVG in Node by vega
 * (no browser, no hand-drawn graphics). A chart with no data in the run is left out, never drawn empty.
 *
 * Every chart is exactly as wide as the page's content column (`PAGE_WIDTH`): the SVGs are rendered here, not
 * in the browser, so there is no container to size against, and the page's CSS takes its width from the same
 * constant. Category labels are never cut: they go on one or more horizontal lines when the bands are wide
 * enough, and are turned (in full) when they are not.
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

/** Width in CSS pixels of the report page's content column, and of every chart on it. */
export const PAGE_WIDTH = 1100;

/** Where a category label may be broken into lines: after each ", ". */
export const LABEL_LINE_BREAK = ", ";

const LABEL_FONT_SIZE = 11;

const BASE = {
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  config: {
    font: "sans-serif",
    axis: { labelFontSize: LABEL_FONT_SIZE, titleFontSize: 12 },
    legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
    title: { fontSize: 14 },
  },
  background: "white",
  // The whole SVG (axes, legend, title included) is PAGE_WIDTH wide; the height is the plot's, and the axis
  // labels under it take what room they need.
  width: PAGE_WIDTH,
  autosize: { type: "fit-x", contains: "padding" },
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

/** A generous estimate of the width of `text` at the label font size (sans-serif averages ~0.55 em). */
function textWidth(text: string, fontSize = LABEL_FONT_SIZE): number {
  return Math.ceil(text.length * fontSize * 0.62);
}

/**
 * How to lay out the x-axis labels of a bar chart with `categories` on a plot about `plotWidth` wide:
 * horizontally, broken into lines at ", ", when the longest line fits in a band; otherwise turned by 40
 * degrees, on one line. Either way with no length limit, so no label is ever cut short.
 */
export function xLabelAxis(categories: string[], plotWidth: number): Record<string, unknown> {
  const band = plotWidth / Math.max(1, categories.length);
  const longestLine = Math.max(
    0,
    ...categories.flatMap((c) => c.split(LABEL_LINE_BREAK).map((l) => textWidth(l))),
  );
  if (longestLine <= band - 8) {
    return {
      labelAngle: 0,
      labelLimit: 0,
      labelAlign: "center",
      labelBaseline: "top",
      labelLineHeight: LABEL_FONT_SIZE + 3,
      labelExpr: `split(datum.label, '${LABEL_LINE_BREAK}')`,
    };
  }
  return { labelAngle: -40, labelLimit: 0, labelAlign: "right", labelBaseline: "top" };
}

/** Room the y axis (labels and title) takes on the left, and a colour legend on the right. */
function plotWidthFor(data: Datum[], legendField: string | null, legendTitle: string | null): number {
  let legend = 0;
  if (legendField) {
    const names = [...new Set(data.map((d) => String(d[legendField])))];
    legend = Math.max(textWidth(legendTitle ?? "", 12), ...names.map((n) => textWidth(n) + 24)) + 30;
  }
  return PAGE_WIDTH - 90 - legend;
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
  const categories = [...new Set(o.data.map((d) => String(d[o.x])))];
  const colorTitle = o.colorTitle ?? o.color;
  const encoding: Record<string, unknown> = {
    x: {
      field: o.x,
      type: "nominal",
      sort: null,
      title: o.xTitle === undefined ? o.x : o.xTitle,
      axis: xLabelAxis(categories, plotWidthFor(o.data, o.color, colorTitle)),
    },
    xOffset: { field: o.color },
    // No stacking: a log-scale bar must start at the domain's low end, not at zero (log 0 = -inf).
    y: {
      field: o.y,
      type: "quantitative",
      title: o.yTitle,
      stack: null,
      ...(o.log ? { scale: { type: "log" } } : {}),
    },
    color: { field: o.color, type: "nominal", title: colorTitle },
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
    height: 220,
  } as unknown as TopLevelSpec;
  return { name: o.name, title: o.title, spec };
}

/** Point shapes for the values of a line chart's second grouping, in order (the legend shows them). */
export const DASH_SHAPES = ["circle", "square", "triangle-up", "diamond", "cross"] as const;
const DASHES = [
  [1, 0],
  [6, 4],
  [2, 3],
  [8, 3, 2, 3],
  [1, 5],
];

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
  /**
   * A second grouping shown as the line's dash pattern and the points' shape (and part of the line's
   * identity); its legend shows a differently shaped point for each value.
   */
  dash?: string;
  dashTitle?: string;
  /** The dash field's values in order: the first gets solid lines and circles, the second dashes and squares. */
  dashOrder?: string[];
  logX?: boolean;
  logY?: boolean;
}): ChartSpec {
  const dashTitle = o.dashTitle ?? o.dash;
  const order = o.dash ? (o.dashOrder ?? [...new Set(o.data.map((d) => String(d[o.dash!])))].sort()) : [];
  const dashScale = { domain: order, range: order.map((_, i) => DASHES[i % DASHES.length]) };
  const shapeScale = { domain: order, range: order.map((_, i) => DASH_SHAPES[i % DASH_SHAPES.length]) };
  const spec = {
    ...BASE,
    title: o.title,
    data: { values: o.data },
    mark: { type: "line", point: { filled: true, size: 45 } },
    encoding: {
      x: {
        field: o.x,
        type: "quantitative",
        title: o.xTitle,
        ...(o.logX ? { scale: { type: "log", base: 2 } } : {}),
      },
      y: { field: o.y, type: "quantitative", title: o.yTitle, ...(o.logY ? { scale: { type: "log" } } : {}) },
      color: { field: o.color, type: "nominal", title: o.colorTitle ?? o.color },
      // Dash and shape on the same field with the same title: vega-lite merges them into one legend, whose
      // symbols then differ in shape (a dash pattern alone is invisible on a legend's point symbol).
      ...(o.dash
        ? {
            strokeDash: { field: o.dash, type: "nominal", title: dashTitle, scale: dashScale },
            shape: { field: o.dash, type: "nominal", title: dashTitle, scale: shapeScale },
          }
        : {}),
      tooltip: [
        { field: o.color, type: "nominal" },
        ...(o.dash ? [{ field: o.dash, type: "nominal" }] : []),
        { field: o.x, type: "quantitative" },
        { field: o.y, type: "quantitative", format: ".3~s" },
      ],
    },
    height: 280,
  } as unknown as TopLevelSpec;
  return { name: o.name, title: o.title, spec };
}
