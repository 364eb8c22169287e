// Small dependency-free SVG charts: time series (lines and marked points) and bars.
// Each drawn series carries data-series (its name) and data-points (how many points it drew).
"use strict";

const Plot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 1000, PAD = { l: 58, r: 14, t: 10, b: 28 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  function fmtNumber(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    if (a >= 100) return v.toFixed(0);
    return +v.toPrecision(3) + "";
  }

  function timeTicks(lo, hi) {
    const span = hi - lo, day = 86400e3;
    const steps = [3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, day, 2 * day, 7 * day, 14 * day, 30 * day, 91 * day, 365 * day];
    const step = steps.find((s) => span / s <= 8) || steps[steps.length - 1];
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
    const withTime = step < day;
    return out.map((t) => {
      const d = new Date(t), iso = d.toISOString();
      return [t, withTime ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(0, 10)];
    });
  }

  // series: [{name, color, points: [[ms, value|null], ...], dots?: true, dash?: "4 3", width?}]
  // options: {height, yLabel, hline: {value, name, color}}
  function line(container, series, options = {}) {
    const H = options.height || 260;
    container.textContent = "";
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": options.yLabel || "plot" }, container);
    const all = series.flatMap((s) => s.points);
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]).filter((v) => v !== null && Number.isFinite(v));
    if (options.hline && Number.isFinite(options.hline.value)) ys.push(options.hline.value);
    if (!xs.length || !ys.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667085" }, svg).textContent = "no points";
      return svg;
    }
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 === x0) x1 = x0 + 3600e3;
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    const pad = (y1 - y0) * 0.05 || Math.abs(y1) * 0.05 || 1;
    y0 -= pad; y1 += pad;
    const sx = (t) => PAD.l + ((t - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
    const sy = (v) => H - PAD.b - ((v - y0) / (y1 - y0)) * (H - PAD.t - PAD.b);
    const axis = el("g", { class: "axis", "font-size": 11, fill: "#667085" }, svg);
    for (const v of niceTicks(y0, y1, 5)) {
      el("line", { x1: PAD.l, x2: W - PAD.r, y1: sy(v), y2: sy(v), stroke: "#eaecf0" }, axis);
      el("text", { x: PAD.l - 6, y: sy(v) + 4, "text-anchor": "end" }, axis).textContent = fmtNumber(v);
    }
    for (const [t, label] of timeTicks(x0, x1)) {
      el("line", { x1: sx(t), x2: sx(t), y1: H - PAD.b, y2: H - PAD.b + 4, stroke: "#98a2b3" }, axis);
      el("text", { x: sx(t), y: H - 8, "text-anchor": "middle" }, axis).textContent = label;
    }
    el("line", { x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b, stroke: "#98a2b3" }, axis);
    if (options.yLabel) {
      el("text", { x: 12, y: PAD.t + (H - PAD.t - PAD.b) / 2, transform: `rotate(-90 12 ${PAD.t + (H - PAD.t - PAD.b) / 2})`,
        "text-anchor": "middle" }, axis).textContent = options.yLabel;
    }
    if (options.hline && Number.isFinite(options.hline.value)) {
      const y = sy(options.hline.value);
      el("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, stroke: options.hline.color || "#b42318", "stroke-dasharray": "6 4",
        "data-series": options.hline.name || "threshold" }, svg);
    }
    for (const s of series) {
      const drawn = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
      if (s.dots) {
        const g = el("g", { fill: s.color, "data-series": s.name, "data-points": drawn.length }, svg);
        for (const [t, v] of drawn) el("circle", { cx: sx(t).toFixed(1), cy: sy(v).toFixed(1), r: s.radius || 3.5 }, g);
        continue;
      }
      let d = "", pen = false;
      for (const [t, v] of s.points) {
        if (v === null || !Number.isFinite(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(t).toFixed(1) + " " + sy(v).toFixed(1);
        pen = true;
      }
      el("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.4, "stroke-dasharray": s.dash || "none",
        "stroke-linejoin": "round", "data-series": s.name, "data-points": drawn.length }, svg);
    }
    return svg;
  }

  // items: [[label, value], ...] drawn as horizontal bars, largest first.
  function bars(container, items, options = {}) {
    container.textContent = "";
    const rows = items.slice().sort((a, b) => b[1] - a[1]).slice(0, options.max || 15);
    const H = 24 * rows.length + 10, LW = 220;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": options.label || "bars",
      "data-series": options.label || "bars", "data-points": rows.length }, container);
    const top = Math.max(...rows.map((r) => r[1]), 1e-12);
    rows.forEach(([label, value], i) => {
      const y = 5 + i * 24, w = ((W - LW - 80) * value) / top;
      el("text", { x: LW - 8, y: y + 15, "text-anchor": "end", "font-size": 12, fill: "#344054" }, svg).textContent = label;
      el("rect", { x: LW, y: y + 3, width: Math.max(w, 1), height: 16, fill: options.color || "#2563eb", rx: 2 }, svg);
      el("text", { x: LW + w + 6, y: y + 15, "font-size": 12, fill: "#667085" }, svg).textContent =
        options.percent ? (100 * value).toFixed(1) + " %" : fmtNumber(value);
    });
    return svg;
  }

  function legend(container, entries) {
    const div = document.createElement("div");
    div.className = "legend";
    for (const [name, color] of entries) {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = color;
      span.append(swatch, name);
      div.appendChild(span);
    }
    container.appendChild(div);
  }

  return { line, bars, legend };
})();
