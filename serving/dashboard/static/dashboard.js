/* routebandit dashboard: reads /v1/stats/... and draws it with uPlot.
 *
 * The API key the user pastes stays in this tab's sessionStorage and leaves the page only
 * as the Authorization header of same-origin fetch calls. Everything the API returns is
 * put in the page as text (textContent), never as markup.
 */
(function () {
  "use strict";

  const KEY = "routebandit.key";
  const PANELS = ["traffic", "kinds", "feedback", "spend", "latency", "errors",
                  "exploration", "versions", "learner"];
  const PALETTE = ["#3b6fb6", "#e07b39", "#3a9d6e", "#c44e52", "#8172b2", "#937860",
                   "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd", "#2f4b7c", "#a05195"];
  const STATUS_COLORS = { error: "#c44e52", rejected: "#e07b39", client_error: "#8172b2",
                          cancelled: "#8c8c8c", failover: "#3b6fb6" };
  const state = { scope: null, colors: new Map(), charts: new Map(), timer: null,
                  generation: 0 };

  // -- small helpers ------------------------------------------------------------------
  const $ = (sel, root) => (root || document).querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "style") Object.assign(node.style, v);
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function colorOf(name) {
    if (!state.colors.has(name)) {
      state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
    }
    return state.colors.get(name);
  }

  const fmt = {
    int: (n) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en")),
    pct: (x, d = 1) => (x === null || x === undefined ? "-" : (100 * x).toFixed(d) + "%"),
    num: (x, d = 3) => (x === null || x === undefined ? "-" : Number(x).toFixed(d)),
    usd(x) {
      if (x === null || x === undefined) return "-";
      if (Math.abs(x) < 5e-7) x = 0;  // no "-$0.000000" from float noise
      const a = Math.abs(x);
      const d = a >= 100 ? 0 : a >= 1 ? 2 : a >= 0.01 ? 4 : 6;
      return (x < 0 ? "-$" : "$") + a.toFixed(d);
    },
    ms: (x) => (x === null || x === undefined ? "-" :
                x >= 1000 ? (x / 1000).toFixed(x >= 10000 ? 1 : 2) + " s" : Math.round(x) + " ms"),
    ago(iso) {
      if (!iso) return "never";
      const s = (Date.now() - Date.parse(iso)) / 1000;
      if (s < 90) return Math.max(0, Math.round(s)) + " s ago";
      if (s < 5400) return Math.round(s / 60) + " min ago";
      if (s < 172800) return Math.round(s / 3600) + " h ago";
      return Math.round(s / 86400) + " days ago";
    },
    time: (iso) => (iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : "-"),
  };

  function kindLabel(kind) { return kind === "" ? "(no task tag)" : kind; }

  // -- the key and the API --------------------------------------------------------------
  function storedKey() { return sessionStorage.getItem(KEY) || ""; }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(err.message || ("HTTP " + status));
      this.status = status;
      this.field = err.field;
    }
  }

  async function api(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== "") query.set(k, v);
    }
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = "Bearer " + key;
    const url = "v1/stats/" + path + (query.toString() ? "?" + query : "");
    const resp = await fetch(url, { headers, cache: "no-store", credentials: "omit",
                                    redirect: "error", referrerPolicy: "no-referrer" });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) throw new ApiError(resp.status, body);
    return body;
  }

  // -- controls and the URL fragment (never holds the key) ---------------------------
  function readHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    for (const id of ["range", "bucket"]) {
      const v = h.get(id);
      if (v && [...$("#" + id).options].some((o) => o.value === v)) $("#" + id).value = v;
    }
    state.wantTenant = h.get("tenant") || "";
    state.wantReference = h.get("reference") || "";
  }

  function writeHash() {
    const h = new URLSearchParams();
    h.set("range", $("#range").value);
    h.set("bucket", $("#bucket").value);
    if ($("#tenant").value) h.set("tenant", $("#tenant").value);
    if ($("#reference").value) h.set("reference", $("#reference").value);
    history.replaceState(null, "", "#" + h.toString());
  }

  function params() {
    return { since: $("#range").value, bucket: $("#bucket").value,
             tenant: state.scope && state.scope.admin ? $("#tenant").value : "" };
  }

  function setStatus(text, error) {
    const s = $("#status");
    s.textContent = text;
    s.classList.toggle("error", Boolean(error));
  }

  // -- charts ------------------------------------------------------------------------
  function chartWidth(box) { return Math.max(280, box.clientWidth || 500); }

  function drawChart(box, name, opts, data) {
    const old = state.charts.get(name);
    if (old) old.destroy();
    box.replaceChildren();
    const u = new uPlot(Object.assign({ width: chartWidth(box), height: 220 }, opts), data, box);
    state.charts.set(name, u);
    return u;
  }

  const UTC = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

  /* A time chart of named series; stacked: each drawn on top of the ones before it. */
  function timeChart(box, name, buckets, series, options) {
    const o = Object.assign({ stacked: false, value: (v) => fmt.num(v, 2), yRange: null },
                            options || {});
    const raw = series.map((s) => s.values);
    let data = raw;
    if (o.stacked) {
      const acc = buckets.map(() => 0);
      data = raw.map((vals) => vals.map((v, i) => (acc[i] += v || 0)));
    }
    const uSeries = [{ value: (u, v) => (v === null ? "-" : fmt.time(new Date(v * 1000).toISOString())) }];
    series.forEach((s, i) => {
      uSeries.push({
        label: s.label, stroke: s.color, width: 1.5,
        fill: o.stacked ? s.color + "55" : undefined,
        spanGaps: !o.stacked,
        points: { show: buckets.length < 60 && !o.stacked, size: 4 },
        value: (u, v, si, idx) => (idx === null ? "-" : o.value(raw[si - 1][idx])),
      });
    });
    // Each stacked series fills down to the one below it (a band), not to zero.
    const bands = o.stacked ? series.slice(1).map((_, i) => ({ series: [i + 2, i + 1] })) : [];
    // Counts, costs and latencies start at zero; shares and scores span [0, 1].
    const yScale = o.yRange ? { range: o.yRange } :
      { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] };
    return drawChart(box, name, {
      tzDate: UTC, series: uSeries, bands,
      scales: { x: { time: true }, y: yScale },
      axes: [{}, { values: (u, ticks) => ticks.map((t) => o.value(t)), size: 64 }],
      legend: { live: true },
      cursor: { points: { show: !o.stacked } },
    }, [buckets, ...data]);
  }

  function barChart(box, name, labels, values, color, valueFmt) {
    const xs = labels.map((_, i) => i);
    return drawChart(box, name, {
      height: 170,
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { auto: true } },
      series: [
        { value: (u, v) => (v === null ? "-" : labels[v]) },
        { label: "decisions", fill: color + "aa", stroke: color,
          paths: uPlot.paths.bars({ size: [0.85, 40] }), points: { show: false },
          value: (u, v) => valueFmt(v) },
      ],
      axes: [{ values: (u, ticks) => ticks.map((t) => labels[t] || ""), space: 40 },
             { values: (u, ticks) => ticks.map((t) => fmt.int(t)), size: 56 }],
      legend: { live: true },
    }, [xs, values]);
  }

  /* Points at each version's creation time with whiskers for its 95% interval. */
  function intervalChart(box, name, rows) {
    const xs = rows.map((r) => Date.parse(r.created) / 1000);
    const whiskers = (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.strokeStyle = "#1f3a5f";
      ctx.lineWidth = 2 * devicePixelRatio;
      rows.forEach((r, i) => {
        if (r.dr_low === null || r.dr_high === null) return;
        const x = u.valToPos(xs[i], "x", true);
        const y0 = u.valToPos(r.dr_low, "y", true);
        const y1 = u.valToPos(r.dr_high, "y", true);
        ctx.beginPath(); ctx.moveTo(x, y0); ctx.lineTo(x, y1);
        ctx.moveTo(x - 5, y0); ctx.lineTo(x + 5, y0);
        ctx.moveTo(x - 5, y1); ctx.lineTo(x + 5, y1);
        ctx.stroke();
      });
      ctx.restore();
    };
    const lows = rows.map((r) => r.dr_low), highs = rows.map((r) => r.dr_high);
    const ys = rows.map((r) => r.dr);
    const finite = [...lows, ...highs, ...ys].filter((v) => v !== null);
    const lo = Math.min(...finite), hi = Math.max(...finite), pad = (hi - lo) * 0.15 || 0.05;
    const span = xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) * 0.05 : 3600;
    return drawChart(box, name, {
      height: 200, tzDate: UTC,
      scales: { x: { time: true, range: [Math.min(...xs) - span, Math.max(...xs) + span] },
                y: { range: [lo - pad, hi + pad] } },
      series: [
        { value: (u, v) => (v === null ? "-" : fmt.time(new Date(v * 1000).toISOString())) },
        { label: "DR estimate", stroke: "#1f3a5f", width: 0,
          points: { show: true, size: 9, fill: "#f2b134" },
          value: (u, v, si, i) => (i === null ? "-" :
            rows[i].version + ": " + fmt.num(v) + " [" + fmt.num(rows[i].dr_low) + ", " +
            fmt.num(rows[i].dr_high) + "]") },
      ],
      axes: [{}, { values: (u, t) => t.map((v) => fmt.num(v, 2)), size: 56 }],
      hooks: { draw: [whiskers] },
    }, [xs, ys]);
  }

  // -- tables and cards -------------------------------------------------------------
  function table(headers, rows) {
    const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
    const body = rows.map((cells) => el("tr", {}, ...cells.map((c) =>
      c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  function swatch(name) {
    return el("span", { class: "swatch", style: { background: colorOf(name) } });
  }

  function named(name) { return el("span", {}, swatch(name), name); }

  function card(label, value, detail) {
    return el("div", { class: "card" }, el("div", { class: "label" }, label),
              el("div", { class: "value" }, value), el("div", { class: "detail" }, detail || ""));
  }

  function panel(name) { return $("#panel-" + name); }

  function setPanel(name, st, message) {
    const p = panel(name);
    p.dataset.state = st;
    const old = $(".message", p);
    if (old) old.remove();
    if (message) p.insertBefore(el("p", { class: "message" }, message), p.children[2] || null);
  }

  function clear(name) {
    const p = panel(name);
    for (const box of p.querySelectorAll(".chart, .table, .saving, .facts, .cooldowns")) {
      box.replaceChildren();
    }
    for (const [key, chart] of state.charts) {
      if (key.startsWith(name)) { chart.destroy(); state.charts.delete(key); }
    }
  }

  // -- the panels ----------------------------------------------------------------------
  const render = {
    traffic(d) {
      const p = panel("traffic");
      const total = Object.values(d.totals).reduce((a, b) => a + b, 0);
      if (!total) return "No decisions in this range.";
      const series = d.models.map((m) => ({ label: m, color: colorOf(m), values: d.decisions[m] }));
      timeChart($(".chart", p), "traffic", d.span.buckets, series,
                { stacked: true, value: fmt.int });
      const kinds = Object.entries(d.kinds).map(([k, n]) => k + " " + fmt.int(n)).join(", ");
      $(".foot", p).textContent = fmt.int(total) + " decisions (" + kinds + ")" +
        (d.shadow ? "; " + fmt.int(d.shadow) + " shadow decisions logged" : "") + ". Share: " +
        d.models.map((m) => m + " " + fmt.pct(d.totals[m] / total)).join(", ") + ".";
      state.summary.decisions = total;
      return null;
    },

    kinds(d) {
      if (!d.kinds.length) return "No policy decisions in this range.";
      const rows = d.kinds.map((k) => {
        const mix = el("div", { class: "mix" }, ...k.models.map((m) => el("span", {
          title: m.model + " " + fmt.pct(m.share),
          style: { width: 100 * m.share + "%", background: colorOf(m.model) } })));
        const top = k.models.slice(0, 3).map((m) => m.model + " " + fmt.pct(m.share, 0)).join(", ");
        return [kindLabel(k.kind), fmt.int(k.decisions), el("td", { class: "models" }, mix, top),
                fmt.pct(k.decisions ? k.scored / k.decisions : null, 0), fmt.num(k.mean_score, 2)];
      });
      const box = $(".table", panel("kinds"));
      box.append(table(["kind", "decisions", "models chosen", "scored", "mean score"], rows));
      if (d.other_kinds) {
        box.append(el("p", { class: "note" }, "and " + fmt.int(d.other_kinds) + " more kinds with " +
                      fmt.int(d.other_decisions) + " decisions"));
      }
      return null;
    },

    feedback(d) {
      const p = panel("feedback");
      const total = d.decisions.reduce((a, b) => a + b, 0);
      if (!total) return "No decisions in this range.";
      const series = [{ label: "coverage", color: "#1f3a5f", values: d.coverage }].concat(
        d.models.map((m) => ({ label: m.model + " mean score", color: colorOf(m.model),
                               values: d.mean_score[m.model] })));
      timeChart($(".chart", p), "feedback", d.span.buckets, series,
                { value: (v) => fmt.num(v, 2), yRange: [0, 1] });
      $(".table", p).append(table(
        ["model", "decisions", "scored", "coverage", "mean score", "mean reward"],
        d.models.map((m) => [named(m.model), fmt.int(m.decisions), fmt.int(m.scored),
                             fmt.pct(m.coverage), fmt.num(m.mean_score), fmt.num(m.mean_reward)])));
      const scored = d.scored.reduce((a, b) => a + b, 0);
      state.summary.coverage = scored / total;
      return null;
    },

    spend(d) {
      const p = panel("spend");
      if (!d.models.length) return "No decisions in this range.";
      const series = d.models.map((m) => ({ label: m.model, color: colorOf(m.model),
                                             values: d.cost_usd[m.model] }));
      timeChart($(".chart", p), "spend", d.span.buckets, series, { stacked: true, value: fmt.usd });
      const box = $(".saving", p);
      if (d.reference) {
        const cls = d.saving_usd_total < 0 ? "big negative" : "big";
        box.append(
          el("div", {}, el("div", { class: cls }, fmt.usd(d.saving_usd_total)),
             el("div", { class: "note" }, (d.saving_usd_total < 0 ? "more" : "saved") +
                " than " + d.reference.model + " (" + fmt.pct(d.saving_share) + ")")),
          el("div", {}, el("div", { class: "note" }, "spent " + fmt.usd(d.priced_cost_usd) +
                " where " + d.reference.model + " would have cost " +
                fmt.usd(d.reference_cost_usd) + " at $" + d.reference.input_price + " / $" +
                d.reference.output_price + " per million input / output tokens"),
             el("div", { class: "note" }, "total spend " + fmt.usd(d.total_cost_usd) +
                (d.unpriced ? "; " + fmt.int(d.unpriced) + " decisions without cost or " +
                 "tokens are left out of the comparison" : ""))));
      }
      $(".table", p).append(table(
        ["model", "decisions", "spend", "input tokens", "output tokens", "at reference", "saving"],
        d.models.map((m) => [named(m.model), fmt.int(m.decisions), fmt.usd(m.cost_usd),
                             fmt.int(m.input_tokens), fmt.int(m.output_tokens),
                             fmt.usd(m.reference_cost_usd), fmt.usd(m.saving_usd)])));
      $(".method", p).textContent = d.method;
      state.summary.spend = d.total_cost_usd;
      state.summary.saving = d.reference ? [d.saving_usd_total, d.saving_share, d.reference.model] : null;
      return null;
    },

    latency(d) {
      const p = panel("latency");
      if (!d.models.length) return "No successful calls with a measured latency in this range.";
      const series = d.models.map((m) => ({ label: m.model + " p95", color: colorOf(m.model),
                                             values: d.p95_ms[m.model] }));
      timeChart($(".chart", p), "latency", d.span.buckets, series, { value: fmt.ms });
      $(".table", p).append(table(
        ["model", "calls", "p50", "p95", "p99", "TTFT p50", "TTFT p95"],
        d.models.map((m) => [named(m.model), fmt.int(m.calls), fmt.ms(m.p50_ms), fmt.ms(m.p95_ms),
                             fmt.ms(m.p99_ms), fmt.ms(m.ttft_p50_ms), fmt.ms(m.ttft_p95_ms)])));
      $(".method", p).textContent = d.method;
      const calls = d.models.reduce((a, m) => a + m.calls, 0);
      state.summary.p95 = calls ? Math.max(...d.models.filter((m) => m.calls).map((m) => m.p95_ms)) : null;
      return null;
    },

    errors(d) {
      const p = panel("errors");
      const outcomes = d.outcomes.reduce((a, b) => a + b, 0);
      const failovers = d.failovers.reduce((a, b) => a + b, 0);
      if (!outcomes && !failovers) return "No upstream calls recorded in this range (routes only, no gateway).";
      const series = Object.entries(d.statuses).filter(([s]) => s !== "ok").map(([s, v]) => (
        { label: s, color: STATUS_COLORS[s] || colorOf(s), values: v }));
      series.push({ label: "failovers", color: STATUS_COLORS.failover, values: d.failovers });
      timeChart($(".chart", p), "errors", d.span.buckets, series, { value: fmt.int });
      const cool = $(".cooldowns", p);
      if (!d.cooldowns_known) cool.append("Cooldowns: this process runs no gateway.");
      else if (!d.cooldowns.length) cool.append("No model is cooling down now.");
      else cool.append("Cooling down now: ", ...d.cooldowns.map((c) =>
        el("span", { class: "tag cool" }, c.model + " (" + c.state + ")")));
      const statuses = [...new Set(d.models.flatMap((m) => Object.keys(m.statuses)))].sort();
      $(".table", p).append(table(["model", "calls", ...statuses, "error rate", "failovers"],
        d.models.map((m) => [named(m.model), fmt.int(m.outcomes),
                             ...statuses.map((s) => fmt.int(m.statuses[s] || 0)),
                             fmt.pct(m.error_rate), fmt.int(m.failovers)])));
      const failed = d.models.reduce((a, m) => a + (m.error_rate || 0) * m.outcomes, 0);
      state.summary.errors = outcomes ? failed / outcomes : null;
      return null;
    },

    exploration(d) {
      const p = panel("exploration");
      if (!d.total_decisions) return "No policy decisions in this range.";
      timeChart($(".chart", p), "exploration", d.span.buckets,
                [{ label: "exploratory share", color: "#8172b2", values: d.share }],
                { value: (v) => fmt.pct(v), yRange: [0, 1] });
      const labels = d.propensities.map((b) => b.low.toFixed(2));
      barChart($(".chart.second", p), "exploration-p", labels,
               d.propensities.map((b) => b.decisions), "#3a9d6e", fmt.int);
      state.summary.explore = d.total_exploratory / d.total_decisions;
      return null;
    },

    versions(d) {
      const p = panel("versions");
      const names = Object.keys(d.decisions);
      if (!names.length && !d.registry.length) return "No decisions or versions in this range.";
      if (names.length) {
        timeChart($(".chart", p), "versions", d.span.buckets,
                  names.map((v) => ({ label: v, color: colorOf("version " + v), values: d.decisions[v] })),
                  { stacked: true, value: fmt.int });
      }
      const withDr = d.registry.filter((r) => r.dr !== null).slice().reverse();
      if (withDr.length) intervalChart($(".chart.second", p), "versions-dr", withDr);
      const used = new Map(d.used.map((u) => [u.version, u]));
      const rows = d.registry.map((r) => {
        const tags = r.aliases.map((a) => el("span", { class: "tag" }, a));
        if (r.version === d.serving) tags.push(el("span", { class: "tag serving" }, "serving"));
        const u = used.get(r.version);
        return [el("td", {}, r.version, " ", ...tags), fmt.time(r.created), r.kind,
                r.dr === null ? "-" : fmt.num(r.dr) + " [" + fmt.num(r.dr_low) + ", " + fmt.num(r.dr_high) + "]",
                fmt.num(r.logged), fmt.int(r.n), u ? fmt.int(u.decisions) : "0"];
      });
      for (const u of d.used) {
        if (d.registry.some((r) => r.version === u.version)) continue;
        const tags = u.version === d.serving ? [el("span", { class: "tag serving" }, "serving")] : [];
        rows.push([el("td", {}, u.version, " ", ...tags), "-", "(not in MLflow)", "-", "-", "-",
                   fmt.int(u.decisions)]);
      }
      $(".table", p).append(table(["version", "created", "kind", "DR estimate [95%]", "logged",
                                   "n", "decisions here"], rows));
      if (d.registry_note) $(".table", p).append(el("p", { class: "note" }, d.registry_note));
      return null;
    },

    learner(d) {
      const box = $(".facts", panel("learner"));
      const cp = d.last_checkpoint;
      box.append(
        card("waiting for feedback", fmt.int(d.waiting), "of " + fmt.int(d.decisions) + " decisions in range"),
        card("feedback not learned", fmt.int(d.unlearned),
             d.oldest_unlearned ? "oldest " + fmt.ago(d.oldest_unlearned) : "none in a queue"),
        card("last update", cp ? fmt.ago(cp.created) : "never",
             cp ? "checkpoint of " + cp.policy_version + " (" + cp.reason + ")" : "no checkpoint yet"),
        card("newest feedback", fmt.ago(d.newest_feedback), ""),
        card("live policy", d.policy_version || "-",
             d.n_learned === null ? "" : fmt.int(d.n_learned) + " steps learned" +
             (d.role ? ", " + d.role : "")));
      return null;
    },
  };

  function summarize() {
    const s = state.summary;
    const box = $("#summary");
    box.replaceChildren(
      card("decisions", fmt.int(s.decisions), "in range"),
      card("feedback coverage", fmt.pct(s.coverage), "decisions with a score"),
      card("spend", fmt.usd(s.spend), "measured or reported"),
      card("saving", s.saving ? fmt.usd(s.saving[0]) : "-",
           s.saving ? fmt.pct(s.saving[1]) + " vs " + s.saving[2] : ""),
      card("error rate", fmt.pct(s.errors), "of upstream calls"),
      card("worst p95 latency", fmt.ms(s.p95), "successful calls"),
      card("exploration", fmt.pct(s.explore), "of policy decisions"));
  }

  // -- loading -----------------------------------------------------------------------
  async function loadPanel(name, generation) {
    const q = params();
    if (name === "spend") q.reference = $("#reference").value;
    try {
      const data = await api(name, q);
      if (generation !== state.generation) return;
      clear(name);
      const empty = render[name](data);
      setPanel(name, empty ? "empty" : "ready", empty);
      if (name === "traffic" && data.span.rolled_up_until) {
        $("#freshness").textContent = "Roll-ups cover the time before " +
          fmt.time(data.span.rolled_up_until) + "; later decisions are read as they are.";
      }
    } catch (err) {
      if (generation !== state.generation) return;
      clear(name);
      setPanel(name, "error", err.message);
      if (err.status === 401) showSignIn(true);
      throw err;
    }
  }

  async function loadAll() {
    writeHash();
    const generation = ++state.generation;
    state.summary = {};
    for (const name of PANELS) panel(name).dataset.state = "loading";
    setStatus("loading...");
    const results = await Promise.allSettled(PANELS.map((n) => loadPanel(n, generation)));
    if (generation !== state.generation) return;
    summarize();
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length) setStatus(failed[0].reason.message, true);
    else setStatus("updated " + new Date().toISOString().slice(11, 19) + " UTC");
  }

  function showSignIn(show) {
    $("#signin").hidden = !show;
    $("#panels").hidden = show;
  }

  async function start() {
    let scope;
    try {
      scope = await api("scope");
    } catch (err) {
      state.scope = null;
      $("#who").textContent = "not signed in";
      $("#who").dataset.state = "none";
      if (err.status === 401 || err.status === 403) {
        showSignIn(true);
        setStatus(storedKey() ? "that key was refused: " + err.message : "an API key is needed", true);
        return;
      }
      setStatus(err.message, true);
      return;
    }
    if (!scope.signed_in) {  // keys exist and none was given
      state.scope = null;
      $("#who").textContent = "not signed in";
      $("#who").dataset.state = "none";
      showSignIn(true);
      setStatus("an API key is needed");
      return;
    }
    state.scope = scope;
    const who = $("#who");
    if (scope.development_mode) {
      who.textContent = "development mode: admin of every tenant";
      who.dataset.state = "dev";
    } else if (scope.admin) {
      who.textContent = "admin key (tenant " + scope.tenant + "): every tenant";
      who.dataset.state = "admin";
    } else {
      who.textContent = "tenant " + scope.tenant;
      who.dataset.state = "tenant";
    }
    const tenantSel = $("#tenant");
    tenantSel.replaceChildren(el("option", { value: "" }, "every tenant"),
                              ...scope.tenants.map((t) => el("option", { value: t }, t)));
    $("#tenant-label").hidden = !scope.admin;
    if (scope.admin && scope.tenants.includes(state.wantTenant)) tenantSel.value = state.wantTenant;
    for (const m of scope.models) colorOf(m.name);
    const ref = $("#reference");
    ref.replaceChildren(...scope.models.map((m) => el("option", { value: m.name },
      m.name + " ($" + m.input_price + " / $" + m.output_price + ")")));
    const wanted = scope.models.some((m) => m.name === state.wantReference) ?
      state.wantReference : scope.default_reference;
    if (wanted) ref.value = wanted;
    showSignIn(false);
    await loadAll();
  }

  function schedule() {
    clearInterval(state.timer);
    if ($("#auto").checked) state.timer = setInterval(() => { if (state.scope) loadAll(); }, 60000);
  }

  function init() {
    readHash();
    $("#key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#key-input").value.trim();
      $("#key-input").value = "";
      if (key) sessionStorage.setItem(KEY, key);
      start();
    });
    $("#forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      state.scope = null;
      start();
    });
    for (const id of ["range", "bucket", "tenant", "reference"]) {
      $("#" + id).addEventListener("change", () => { if (state.scope) loadAll(); });
    }
    $("#reload").addEventListener("click", () => (state.scope ? loadAll() : start()));
    $("#auto").addEventListener("change", schedule);
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        for (const chart of state.charts.values()) {
          chart.setSize({ width: chartWidth(chart.root.parentElement), height: chart.height });
        }
      }, 150);
    });
    schedule();
    start();
  }

  init();
})();
