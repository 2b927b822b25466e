/* quoteflow dashboard: live quotes over Server-Sent Events, drawn on <canvas>.
 *
 * Plain JavaScript, no framework, no build step, no third-party code, and no request
 * to any host but the one serving this page. Every URL is relative ("stream",
 * "symbols", "snapshot"), so the page also works behind a path prefix such as
 * jupyter-server-proxy's "/proxy/8080/".
 *
 * Data flow: the browser's own EventSource delivers tick/bar/reset events; handlers
 * only update plain state objects and mark what changed; one requestAnimationFrame
 * callback per frame repaints the changed table rows and charts. However many events
 * arrive per second, the page paints at most once per frame. History per symbol is a
 * fixed-size ring buffer, so memory stays bounded on a page left open for days.
 *
 * Resume: EventSource reconnects by itself and sends the Last-Event-ID header
 * (WHATWG HTML §9.2.3); the server replays what was missed, or sends `event: reset`
 * with a snapshot when it cannot, which the charts show as a gap.
 */
(function () {
  "use strict";

  const HISTORY_POINTS = 600; // line-chart points kept per symbol
  const MAX_CANDLES = 240; // candles kept per symbol
  const MAX_IDS = 20000; // recent event ids kept for the debug object
  const DEFAULT_CHARTS = 4; // charts shown when the page opens
  const FALLBACK_BAR_MS = 5000; // candle width before the first server bar arrives
  const MANUAL_RETRY_MS = [1000, 2000, 5000, 10000]; // only after EventSource gave up

  // ---- page parameters: ?symbols=A,B and ?events=tick passed through to the stream
  const pageParams = new URLSearchParams(window.location.search);
  const symbolFilter = (pageParams.get("symbols") || "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const eventsParam = pageParams.get("events") || "tick,bar";

  function streamUrl(resumeFrom) {
    const q = new URLSearchParams();
    q.set("events", eventsParam);
    if (symbolFilter.length) q.set("symbols", symbolFilter.join(","));
    if (resumeFrom) q.set("lastEventId", resumeFrom);
    return "stream?" + q.toString();
  }

  // ---- small helpers ------------------------------------------------------------
  const $ = (id) => document.getElementById(id);

  class Ring {
    /* Fixed-capacity (time, value) ring buffer; value NaN marks a gap. */
    constructor(capacity) {
      this.cap = capacity;
      this.t = new Float64Array(capacity);
      this.v = new Float64Array(capacity);
      this.start = 0;
      this.size = 0;
    }
    push(t, v) {
      let i;
      if (this.size < this.cap) {
        i = (this.start + this.size) % this.cap;
        this.size += 1;
      } else {
        i = this.start;
        this.start = (this.start + 1) % this.cap;
      }
      this.t[i] = t;
      this.v[i] = v;
    }
    timeAt(k) {
      return this.t[(this.start + k) % this.cap];
    }
    valueAt(k) {
      return this.v[(this.start + k) % this.cap];
    }
  }

  function parseTime(iso) {
    const t = Date.parse(iso);
    return Number.isFinite(t) ? t : Date.now();
  }

  function num(x) {
    const v = Number(x);
    return Number.isFinite(v) ? v : NaN;
  }

  function decimalsFor(price) {
    return Math.abs(price) >= 1 ? 2 : 4; // cents, or more digits for penny prices
  }

  function fmtPrice(p) {
    return Number.isFinite(p) ? p.toFixed(decimalsFor(p)) : "–";
  }

  function fmtSigned(x, digits) {
    if (!Number.isFinite(x)) return "–";
    const s = x.toFixed(digits);
    if (Number(s) === 0) return (0).toFixed(digits); // no "-0.00"
    return x > 0 ? "+" + s : s;
  }

  const intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

  function fmtTime(ms, withSeconds) {
    const d = new Date(ms);
    const p2 = (n) => String(n).padStart(2, "0");
    const hm = p2(d.getHours()) + ":" + p2(d.getMinutes());
    return withSeconds ? hm + ":" + p2(d.getSeconds()) : hm;
  }

  function niceStep(range, count) {
    // The smallest 1-2-5 step that gives at most `count` intervals over `range`.
    const raw = range / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const r = raw / mag;
    return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * mag;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function setTone(el, x) {
    const tone = !Number.isFinite(x) || x === 0 ? "" : x > 0 ? "up" : "down";
    if (el.dataset.tone !== tone) {
      el.classList.remove("up", "down");
      if (tone) el.classList.add(tone);
      el.dataset.tone = tone;
    }
  }

  // ---- state --------------------------------------------------------------------
  const symbols = new Map(); // name -> symbol state
  const charted = new Set(); // names with a chart card
  let userPickedCharts = false;
  let chartMode = "line";

  const conn = {
    source: null,
    state: "connecting",
    states: ["connecting"],
    everOpen: false,
    reconnects: 0,
    manualRetries: 0,
    retryTimer: 0,
  };

  const stats = {
    eventsReceived: 0,
    ticks: 0,
    bars: 0,
    resets: 0,
    badEvents: 0,
    lastEventId: "",
    ids: [],
    rate: 0,
    lagMs: NaN,
    framesRendered: 0,
    renderMs: 0,
  };

  let headerDirty = true;
  let layoutDirty = true;
  const dirtyRows = new Set();
  const dirtyCharts = new Set();
  let frameRequested = false;

  function newSymbol(name) {
    return {
      name,
      model: "",
      ref: NaN, // first price seen since the page opened
      last: NaN,
      dir: 0, // sign of the last price move
      bid: NaN,
      ask: NaN,
      volume: 0,
      ticks: 0,
      history: new Ring(HISTORY_POINTS),
      gaps: [], // times at which a reset cut the history
      candles: [], // {start, end, o, h, l, c, v, final}
      barMs: NaN,
      anchor: NaN, // start of the next candle the page builds from ticks
      drawnCandles: 0, // candles on the chart at its last candle-mode draw (for tests)
      row: null,
      card: null,
    };
  }

  function ensureSymbol(name) {
    let s = symbols.get(name);
    if (s) return s;
    s = newSymbol(name);
    symbols.set(name, s);
    addRow(s);
    if (!userPickedCharts && (charted.size < DEFAULT_CHARTS || name < [...charted].sort().pop())) {
      // Until the user picks, chart the first symbols in alphabetical order.
      const first = [...symbols.keys()].sort().slice(0, DEFAULT_CHARTS);
      if (first.includes(name)) {
        charted.clear();
        first.forEach((n) => charted.add(n));
        layoutDirty = true;
      }
    }
    return s;
  }

  function markSymbol(s) {
    dirtyRows.add(s);
    if (charted.has(s.name)) dirtyCharts.add(s);
    requestFrame();
  }

  // ---- events -------------------------------------------------------------------
  function recordId(id) {
    if (!id) return;
    stats.lastEventId = id;
    stats.ids.push(id);
    if (stats.ids.length > MAX_IDS * 1.1) stats.ids.splice(0, stats.ids.length - MAX_IDS);
  }

  function parse(e) {
    stats.eventsReceived += 1;
    recordId(e.lastEventId);
    headerDirty = true;
    try {
      return JSON.parse(e.data);
    } catch (err) {
      stats.badEvents += 1;
      console.warn("quoteflow: event", e.lastEventId, "is not JSON:", err);
      return null;
    }
  }

  function applyQuote(s, q, addVolume) {
    const p = num(q.price);
    if (!Number.isFinite(p)) return false;
    if (!Number.isFinite(s.ref)) s.ref = p;
    if (Number.isFinite(s.last) && p !== s.last) s.dir = Math.sign(p - s.last);
    s.last = p;
    s.bid = num(q.bid);
    s.ask = num(q.ask);
    if (addVolume) {
      const size = num(q.size);
      if (Number.isFinite(size)) s.volume += size;
      s.ticks += 1;
    }
    return true;
  }

  function onTick(e) {
    const q = parse(e);
    if (!q || typeof q.symbol !== "string") return;
    const s = ensureSymbol(q.symbol);
    if (!applyQuote(s, q, true)) return;
    stats.ticks += 1;
    const t = parseTime(q.ts);
    const lag = Date.now() - t;
    stats.lagMs = Number.isFinite(stats.lagMs) ? stats.lagMs * 0.9 + lag * 0.1 : lag;
    s.history.push(t, s.last);
    growCandle(s, t, s.last, num(q.size) || 0);
    markSymbol(s);
  }

  function onBar(e) {
    const b = parse(e);
    if (!b || typeof b.symbol !== "string") return;
    if (stats.bars === 0) {
      // For tests: candles already on the charts when the stream's first bar arrives
      // (the back-fill from /history draws them before the stream is opened).
      backfilled.drawnAtFirstBar = [...charted].reduce((n, name) => {
        const c = symbols.get(name);
        return n + (c ? c.drawnCandles : 0);
      }, 0);
    }
    stats.bars += 1;
    addBar(ensureSymbol(b.symbol), b);
  }

  function addBar(s, b) {
    const start = parseTime(b.start);
    const end = parseTime(b.end);
    // Bar width: the step between consecutive bar starts when known (a bar's own
    // start..end may span first to last tick, a tick interval short of the width).
    const prev = s.candles.filter((c) => c.final).pop();
    if (prev && start > prev.start) s.barMs = start - prev.start;
    else if (end > start && !Number.isFinite(s.barMs)) s.barMs = end - start;
    const bar = {
      start,
      end,
      o: num(b.open),
      h: num(b.high),
      l: num(b.low),
      c: num(b.close),
      v: num(b.volume) || 0,
      final: true,
    };
    // A server bar is authoritative: it replaces the candles the page built from
    // ticks; ticks after it start a new candle on the server's grid.
    const kept = s.candles.filter((c) => c.final && c.start !== start);
    kept.push(bar);
    kept.sort((a, b2) => a.start - b2.start);
    s.candles = kept.slice(-MAX_CANDLES);
    s.anchor = Math.max(Number.isFinite(s.anchor) ? s.anchor : end, end);
    markSymbol(s);
  }

  function growCandle(s, t, p, size) {
    const ms = Number.isFinite(s.barMs) ? s.barMs : FALLBACK_BAR_MS;
    if (!Number.isFinite(s.anchor)) s.anchor = Math.floor(t / ms) * ms;
    if (t < s.anchor) return; // belongs to a bar the server already closed
    const start = s.anchor + Math.floor((t - s.anchor) / ms) * ms;
    let c = s.candles[s.candles.length - 1];
    if (!c || c.start < start) {
      c = { start, end: start + ms, o: p, h: p, l: p, c: p, v: 0, final: false };
      s.candles.push(c);
      if (s.candles.length > MAX_CANDLES) s.candles.splice(0, s.candles.length - MAX_CANDLES);
    } else if (c.start > start || c.final) {
      return;
    }
    c.h = Math.max(c.h, p);
    c.l = Math.min(c.l, p);
    c.c = p;
    c.v += size;
  }

  function onReset(e) {
    const r = parse(e);
    stats.resets += 1;
    const reason = (r && r.reason) || "unknown";
    const lastId = r && r.last_id != null ? String(r.last_id) : "?";
    const snap = (r && r.snapshot) || {};
    // The gap ends where the snapshot starts (server time), so the break in the line
    // and the dashed marker sit at the same place.
    let gapAt = -Infinity;
    for (const q of Object.values(snap)) if (q && q.ts) gapAt = Math.max(gapAt, parseTime(q.ts));
    if (!Number.isFinite(gapAt)) gapAt = Date.now();
    showNotice(
      "Missed events after id " + lastId + " (" + reason + "): resumed from a snapshot at " +
        fmtTime(gapAt, true) + ". Charts show the gap as a dashed line."
    );
    // A NaN point breaks each line so the chart does not draw a straight segment across
    // data that never arrived; candles built from ticks would be wrong, so drop them.
    for (const s of symbols.values()) {
      s.history.push(gapAt, NaN);
      s.gaps.push(gapAt);
      s.candles = s.candles.filter((c) => c.final);
      s.anchor = NaN;
      markSymbol(s);
    }
    for (const [name, q] of Object.entries(snap)) {
      const s = ensureSymbol(name);
      if (!s.gaps.includes(gapAt)) {
        s.history.push(gapAt, NaN);
        s.gaps.push(gapAt);
      }
      if (applyQuote(s, q, false)) s.history.push(gapAt, s.last);
      markSymbol(s);
    }
  }

  // ---- connection ---------------------------------------------------------------
  function setState(state) {
    if (conn.state === state) return;
    conn.state = state;
    conn.states.push(state);
    if (conn.states.length > 50) conn.states.splice(0, conn.states.length - 50);
    headerDirty = true;
    requestFrame();
  }

  function connect(resumeFrom) {
    const es = new EventSource(streamUrl(resumeFrom));
    conn.source = es;
    es.onopen = () => {
      if (conn.source !== es) return;
      conn.everOpen = true;
      conn.manualRetries = 0;
      setState("live");
    };
    es.onerror = () => {
      if (conn.source !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself after `retry` ms, sending Last-Event-ID.
        if (conn.state === "live") conn.reconnects += 1;
        setState("reconnecting");
      } else if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (HTTP error or wrong content type): retry ourselves,
        // resuming from the last id with the query parameter (EventSource cannot set
        // headers on a new connection).
        if (conn.state === "live") conn.reconnects += 1;
        const delay = MANUAL_RETRY_MS[Math.min(conn.manualRetries, MANUAL_RETRY_MS.length - 1)];
        conn.manualRetries += 1;
        setState(conn.everOpen ? "reconnecting" : "offline");
        clearTimeout(conn.retryTimer);
        conn.retryTimer = setTimeout(() => connect(stats.lastEventId), delay);
      }
    };
    es.addEventListener("tick", onTick);
    es.addEventListener("bar", onBar);
    es.addEventListener("reset", onReset);
  }

  // Events per second, measured over the last second of wall time.
  let rateCount = 0;
  let rateAt = performance.now();
  setInterval(() => {
    const now = performance.now();
    stats.rate = ((stats.eventsReceived - rateCount) * 1000) / Math.max(1, now - rateAt);
    rateCount = stats.eventsReceived;
    rateAt = now;
    headerDirty = true;
    requestFrame();
  }, 1000);

  // ---- history: candles back-filled from GET /history --------------------------------
  // The charted symbols' completed bars are fetched before the stream opens, which then
  // resumes after the oldest of their last_event_ids: no bar missing between history
  // and live, and a bar replayed for a symbol that already has it replaces itself
  // (addBar keys candles by start). Symbols charted later (or on switching to the
  // candle view) are back-filled when they are.
  const backfilled = { requested: new Set(), bars: 0, drawnAtFirstBar: null };

  function fetchHistory(name) {
    const q = new URLSearchParams({ symbol: name, limit: String(MAX_CANDLES) });
    return fetch("history?" + q.toString(), { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((h) => {
        if (!h || !Array.isArray(h.bars)) return null;
        const s = ensureSymbol(typeof h.symbol === "string" ? h.symbol : name);
        for (const b of h.bars) addBar(s, b);
        backfilled.bars += h.bars.length;
        markSymbol(s);
        return h.last_event_id == null ? null : String(h.last_event_id);
      })
      .catch(() => null);
  }

  function backfill(names) {
    const todo = names.filter((n) => !backfilled.requested.has(n));
    todo.forEach((n) => backfilled.requested.add(n));
    return Promise.all(todo.map(fetchHistory));
  }

  function idOrder(a, b) {
    // Ids of either broker: "12" or "1764212345678-3".
    const x = a.split("-").map(Number);
    const y = b.split("-").map(Number);
    for (let i = 0; i < Math.max(x.length, y.length); i += 1) {
      const d = (x[i] || 0) - (y[i] || 0);
      if (d) return d;
    }
    return 0;
  }

  function oldestId(ids) {
    // A symbol without bars yet has nothing before the oldest id to miss; no id at all:
    // stream from now.
    const known = ids.filter((id) => id !== null);
    return known.length ? known.sort(idOrder)[0] : "";
  }

  // ---- initial metadata (models, snapshot) -----------------------------------------
  function loadMetadata() {
    const symbolsLoaded = fetch("symbols", { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((info) => {
        if (!info || typeof info !== "object") return;
        for (const [name, meta] of Object.entries(info)) {
          if (symbolFilter.length && !symbolFilter.includes(name)) continue;
          const s = ensureSymbol(name);
          s.model = (meta && meta.model) || "";
          // A model's price only fills a symbol that has no quote yet (the snapshot
          // or a tick is newer).
          if (!Number.isFinite(s.last) && meta && Number.isFinite(num(meta.price))) {
            s.last = num(meta.price);
            s.ref = s.last;
          }
          markSymbol(s);
        }
      })
      .catch(() => {});
    const q = symbolFilter.length ? "?symbols=" + encodeURIComponent(symbolFilter.join(",")) : "";
    fetch("snapshot" + q, { headers: { Accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((snap) => {
        if (!snap || typeof snap !== "object") return;
        // {"last_id": ..., "quotes": {symbol: tick}}; a bare {symbol: tick} also works.
        const body = snap.quotes && typeof snap.quotes === "object" ? snap.quotes : snap;
        const quotes = Array.isArray(body) ? body : Object.values(body);
        for (const quote of quotes) {
          if (!quote || typeof quote.symbol !== "string") continue;
          const s = ensureSymbol(quote.symbol);
          // Only a symbol with no live tick yet takes the snapshot (it is older).
          if (s.ticks === 0 && applyQuote(s, quote, false)) {
            s.ref = s.last;
            markSymbol(s);
          }
        }
      })
      .catch(() => {});
    return symbolsLoaded;
  }

  // ---- DOM: table ----------------------------------------------------------------
  const tbody = document.querySelector("#quotes tbody");
  // Only rows in (or near) the scrolled view are repainted; the others stay dirty until
  // they scroll in. With a large universe this keeps a frame cheap.
  const visibleRows = new Set();
  const rowObserver = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        const s = symbols.get(entry.target.dataset.symbol);
        if (!s) continue;
        if (entry.isIntersecting) {
          visibleRows.add(s);
          dirtyRows.add(s);
        } else {
          visibleRows.delete(s);
        }
      }
      requestFrame();
    },
    { root: document.querySelector(".quotes"), rootMargin: "200px 0px" }
  );
  const COLS = ["sym", "model", "price num", "chg num", "pct num", "bid num", "ask num", "vol num", "ticks num"];

  function addRow(s) {
    const tr = document.createElement("tr");
    tr.dataset.symbol = s.name;
    tr.title = "Click to show or hide the chart of " + s.name;
    const cells = {};
    for (const cls of COLS) {
      const td = document.createElement("td");
      td.className = cls;
      cells[cls.split(" ")[0]] = td;
      tr.appendChild(td);
    }
    cells.sym.textContent = s.name;
    tr.tabIndex = 0;
    tr.addEventListener("click", () => toggleChart(s.name));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        toggleChart(s.name);
      }
    });
    s.row = { tr, cells };
    // Keep rows in alphabetical order.
    const after = [...tbody.children].find((r) => r.dataset.symbol > s.name);
    tbody.insertBefore(tr, after || null);
    rowObserver.observe(tr);
  }

  function renderRow(s) {
    const c = s.row.cells;
    setText(c.model, s.model);
    setText(c.price, fmtPrice(s.last));
    const dirClass = s.dir > 0 ? "up" : s.dir < 0 ? "down" : "flat";
    if (c.price.dataset.dir !== dirClass) {
      c.price.classList.remove("up", "down", "flat");
      c.price.classList.add(dirClass);
      c.price.dataset.dir = dirClass;
    }
    const chg = s.last - s.ref;
    const pct = (chg / s.ref) * 100;
    setText(c.chg, fmtSigned(chg, decimalsFor(s.last)));
    setText(c.pct, Number.isFinite(pct) ? fmtSigned(pct, 2) + "%" : "–");
    setTone(c.chg, chg);
    setTone(c.pct, chg);
    setText(c.bid, fmtPrice(s.bid));
    setText(c.ask, fmtPrice(s.ask));
    setText(c.vol, intFormat.format(s.volume));
    setText(c.ticks, intFormat.format(s.ticks));
    s.row.tr.classList.toggle("charted", charted.has(s.name));
  }

  // ---- DOM: header ---------------------------------------------------------------
  const statusEl = $("status");

  function renderHeader() {
    statusEl.dataset.state = conn.state;
    setText($("status-text"), conn.state);
    setText($("stat-last-id"), stats.lastEventId || "–");
    setText($("stat-rate"), stats.rate.toFixed(stats.rate < 10 ? 1 : 0));
    setText($("stat-events"), intFormat.format(stats.eventsReceived));
    setText($("stat-lag"), Number.isFinite(stats.lagMs) ? Math.max(0, stats.lagMs).toFixed(0) + " ms" : "–");
    setText($("stat-reconnects"), String(conn.reconnects));
  }

  function showNotice(text) {
    const el = $("notice");
    el.textContent = text;
    el.hidden = false;
  }

  // ---- DOM: charts ---------------------------------------------------------------
  const chartsEl = $("charts");

  function toggleChart(name) {
    userPickedCharts = true;
    if (charted.has(name)) charted.delete(name);
    else {
      charted.add(name);
      backfill([name]);
    }
    layoutDirty = true;
    const s = symbols.get(name);
    if (s) dirtyRows.add(s);
    requestFrame();
  }

  function makeCard(s) {
    const card = document.createElement("div");
    card.className = "chart-card";
    card.dataset.symbol = s.name;
    const head = document.createElement("div");
    head.className = "chart-head";
    const parts = {};
    for (const cls of ["sym", "px", "chg", "meta"]) {
      const span = document.createElement("span");
      span.className = cls;
      head.appendChild(span);
      parts[cls] = span;
    }
    parts.sym.textContent = s.name;
    const canvas = document.createElement("canvas");
    canvas.dataset.symbol = s.name;
    resizeObserver.observe(canvas);
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "Price chart of " + s.name);
    card.append(head, canvas);
    s.card = { el: card, parts, canvas };
  }

  function renderLayout() {
    const names = [...charted].filter((n) => symbols.has(n)).sort();
    const cols = names.length <= 1 ? 1 : names.length <= 4 ? 2 : names.length <= 9 ? 3 : 4;
    chartsEl.style.setProperty("--cols", String(cols));
    const wanted = names.map((n) => {
      const s = symbols.get(n);
      if (!s.card) makeCard(s);
      return s.card.el;
    });
    const current = [...chartsEl.children];
    if (current.length !== wanted.length || current.some((el, i) => el !== wanted[i])) {
      chartsEl.replaceChildren(...wanted);
    }
    for (const n of names) dirtyCharts.add(symbols.get(n));
    for (const s of symbols.values()) dirtyRows.add(s);
  }

  let palette = null;

  function colors() {
    if (!palette) {
      const css = getComputedStyle(document.documentElement);
      const v = (name) => css.getPropertyValue(name).trim();
      palette = {
        up: v("--up"),
        down: v("--down"),
        text: v("--text"),
        muted: v("--muted"),
        grid: v("--grid"),
        warn: v("--warn"),
        panel: v("--panel"),
        mono: v("--mono"),
      };
    }
    return palette;
  }

  function prepareCanvas(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const size = canvasSizes.get(canvas);
    if (!size || size.w < 1 || size.h < 1) return null; // not laid out yet
    const { w, h } = size;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    return { ctx, w, h };
  }

  const PAD = { left: 8, right: 62, top: 10, bottom: 20 };

  function drawMessage(ctx, w, h, text) {
    const pal = colors();
    ctx.fillStyle = pal.muted;
    ctx.font = "12px " + pal.mono;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(text, w / 2, h / 2);
  }

  function drawPriceAxis(ctx, w, y0, y1, lo, hi, tagY) {
    // Horizontal grid at "nice" price steps, labels on the right.
    const pal = colors();
    const step = niceStep(hi - lo, Math.max(2, Math.floor((y1 - y0) / 36)));
    const digits = Math.max(0, Math.min(6, -Math.floor(Math.log10(step))));
    ctx.font = "11px " + pal.mono;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 1;
    for (let p = Math.ceil(lo / step) * step; p <= hi; p += step) {
      const y = Math.round(y1 - ((p - lo) / (hi - lo)) * (y1 - y0)) + 0.5;
      ctx.strokeStyle = pal.grid;
      ctx.beginPath();
      ctx.moveTo(PAD.left, y);
      ctx.lineTo(w - PAD.right, y);
      ctx.stroke();
      // A label under the last-price tag would be unreadable: skip it.
      if (Math.abs(y - tagY) < 14) continue;
      ctx.fillStyle = pal.muted;
      ctx.fillText(p.toFixed(digits), w - PAD.right + 6, y);
    }
  }

  function drawTimeAxis(ctx, h, x0, x1, t0, t1) {
    const pal = colors();
    const span = t1 - t0;
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((x) => x * 1000);
    const want = span / Math.max(1, Math.floor((x1 - x0) / 90));
    const step = steps.find((x) => x >= want) || steps[steps.length - 1];
    ctx.font = "10px " + pal.mono;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillStyle = pal.muted;
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
      const x = x0 + ((t - t0) / span) * (x1 - x0);
      const label = fmtTime(t, step < 60000);
      const half = ctx.measureText(label).width / 2;
      if (x - half < 0 || x + half > x1) continue; // would be clipped or hit the price axis
      ctx.fillText(label, x, h - 3);
    }
  }

  function drawPriceTag(ctx, w, y, price, color) {
    const pal = colors();
    const text = fmtPrice(price);
    ctx.font = "bold 11px " + pal.mono;
    const tw = ctx.measureText(text).width;
    ctx.fillStyle = color;
    ctx.fillRect(w - PAD.right + 2, y - 8, tw + 8, 16);
    ctx.fillStyle = pal.panel;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillText(text, w - PAD.right + 6, y);
  }

  function drawLineChart(ctx, w, h, s) {
    const pal = colors();
    const hist = s.history;
    const n = hist.size;
    if (n < 2) return drawMessage(ctx, w, h, "waiting for ticks…");
    const t0 = hist.timeAt(0);
    const t1 = Math.max(hist.timeAt(n - 1), t0 + 1);
    let lo = Infinity;
    let hi = -Infinity;
    for (let k = 0; k < n; k++) {
      const v = hist.valueAt(k);
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!Number.isFinite(lo)) return drawMessage(ctx, w, h, "waiting for ticks…");
    const padY = Math.max((hi - lo) * 0.08, Math.abs(hi) * 0.0005, 1e-6);
    lo -= padY;
    hi += padY;
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const y0 = PAD.top;
    const y1 = h - PAD.bottom;
    const X = (t) => x0 + ((t - t0) / (t1 - t0)) * (x1 - x0);
    const Y = (v) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);

    const tagY = Math.min(y1, Math.max(y0, Y(s.last)));
    drawPriceAxis(ctx, w, y0, y1, lo, hi, tagY);
    drawTimeAxis(ctx, h, x0, x1, t0, t1);

    const color = s.last >= s.ref ? pal.up : pal.down;
    // Reference: the price when the page opened, if it is in view.
    if (s.ref >= lo && s.ref <= hi) {
      ctx.save();
      ctx.setLineDash([3, 4]);
      ctx.strokeStyle = pal.muted;
      ctx.beginPath();
      ctx.moveTo(x0, Math.round(Y(s.ref)) + 0.5);
      ctx.lineTo(x1, Math.round(Y(s.ref)) + 0.5);
      ctx.stroke();
      ctx.restore();
    }
    // Gaps (reset events) in view.
    ctx.save();
    ctx.setLineDash([4, 3]);
    ctx.strokeStyle = pal.warn;
    s.gaps = s.gaps.filter((g) => g >= t0);
    for (const g of s.gaps) {
      const x = Math.round(X(g)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, y0);
      ctx.lineTo(x, y1);
      ctx.stroke();
    }
    ctx.restore();

    // The price line, broken at NaN points, with a soft fill under it.
    const segments = [];
    let seg = null;
    for (let k = 0; k < n; k++) {
      const v = hist.valueAt(k);
      if (!Number.isFinite(v)) {
        seg = null;
        continue;
      }
      if (!seg) {
        seg = [];
        segments.push(seg);
      }
      seg.push(X(hist.timeAt(k)), Y(v));
    }
    const grad = ctx.createLinearGradient(0, y0, 0, y1);
    grad.addColorStop(0, color + "40");
    grad.addColorStop(1, color + "00");
    for (const pts of segments) {
      ctx.beginPath();
      ctx.moveTo(pts[0], pts[1]);
      for (let i = 2; i < pts.length; i += 2) ctx.lineTo(pts[i], pts[i + 1]);
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.lineTo(pts[pts.length - 2], y1);
      ctx.lineTo(pts[0], y1);
      ctx.closePath();
      ctx.fillStyle = grad;
      ctx.fill();
    }
    if (Number.isFinite(s.last)) drawPriceTag(ctx, w, tagY, s.last, color);
  }

  function drawCandleChart(ctx, w, h, s) {
    const pal = colors();
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const y0 = PAD.top;
    const y1 = h - PAD.bottom;
    const minSlot = 5;
    // Every candle kept so far is drawn, also those built while the line view was on (or
    // the symbol had no chart): switching to candles back-fills from the bars already seen.
    const shown = s.candles.slice(-Math.max(1, Math.floor((x1 - x0) / minSlot)));
    s.drawnCandles = shown.length;
    if (!shown.length) return drawMessage(ctx, w, h, "waiting for the first candle…");
    const slot = (x1 - x0) / Math.max(shown.length, 40);
    const volH = Math.max(16, (y1 - y0) * 0.2);
    const py1 = y1 - volH - 4;
    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const c of shown) {
      lo = Math.min(lo, c.l);
      hi = Math.max(hi, c.h);
      vmax = Math.max(vmax, c.v);
    }
    const padY = Math.max((hi - lo) * 0.08, Math.abs(hi) * 0.0005, 1e-6);
    lo -= padY;
    hi += padY;
    const Y = (v) => py1 - ((v - lo) / (hi - lo)) * (py1 - y0);
    const tagY = Math.min(py1, Math.max(y0, Y(s.last)));
    drawPriceAxis(ctx, w, y0, py1, lo, hi, tagY);
    // Right-align: the newest candle sits next to the price axis.
    const left = x1 - shown.length * slot;
    // Time labels: the start of every k-th candle, at least ~80 px apart.
    const every = Math.max(1, Math.ceil(80 / slot));
    ctx.font = "10px " + pal.mono;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillStyle = pal.muted;
    const withSeconds = (Number.isFinite(s.barMs) ? s.barMs : FALLBACK_BAR_MS) < 60000;
    for (let i = shown.length - 1; i >= 0; i -= every) {
      ctx.fillText(fmtTime(shown[i].start, withSeconds), left + (i + 0.5) * slot, h - 3);
    }
    const body = Math.max(1, Math.floor(slot * 0.7));
    shown.forEach((c, i) => {
      const cx = Math.round(left + (i + 0.5) * slot);
      const color = c.c >= c.o ? pal.up : pal.down;
      ctx.globalAlpha = c.final ? 1 : 0.6;
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(cx + 0.5, Math.round(Y(c.h)));
      ctx.lineTo(cx + 0.5, Math.round(Y(c.l)));
      ctx.stroke();
      const top = Math.round(Y(Math.max(c.o, c.c)));
      const bh = Math.max(1, Math.round(Y(Math.min(c.o, c.c))) - top);
      ctx.fillRect(cx - Math.floor(body / 2) + 0.5, top, body, bh);
      if (vmax > 0) {
        const vh = (c.v / vmax) * volH;
        ctx.globalAlpha = c.final ? 0.35 : 0.2;
        ctx.fillRect(cx - Math.floor(body / 2) + 0.5, y1 - vh, body, vh);
      }
    });
    ctx.globalAlpha = 1;
    if (Number.isFinite(s.last)) drawPriceTag(ctx, w, tagY, s.last, s.last >= s.ref ? pal.up : pal.down);
  }

  function renderChart(s) {
    if (!s.card) return;
    const { parts, canvas } = s.card;
    setText(parts.px, fmtPrice(s.last));
    const chg = s.last - s.ref;
    const pct = (chg / s.ref) * 100;
    setText(parts.chg, Number.isFinite(pct) ? fmtSigned(chg, decimalsFor(s.last)) + " (" + fmtSigned(pct, 2) + "%)" : "");
    setTone(parts.chg, chg);
    setText(parts.meta, (s.model ? s.model + " · " : "") + (chartMode === "line" ? "ticks" : barLabel(s)));
    const prepared = prepareCanvas(canvas);
    if (!prepared) return;
    const { ctx, w, h } = prepared;
    if (chartMode === "candles") drawCandleChart(ctx, w, h, s);
    else drawLineChart(ctx, w, h, s);
  }

  function barLabel(s) {
    const sec = Math.round((Number.isFinite(s.barMs) ? s.barMs : FALLBACK_BAR_MS) / 100) / 10;
    return (sec >= 60 && sec % 60 === 0 ? sec / 60 + " min" : sec + " s") + " bars";
  }

  // ---- frame loop ----------------------------------------------------------------
  function requestFrame() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(render);
  }

  function render() {
    const began = performance.now();
    frameRequested = false;
    stats.framesRendered += 1;
    if (layoutDirty) {
      layoutDirty = false;
      renderLayout();
    }
    if (headerDirty) {
      headerDirty = false;
      renderHeader();
    }
    for (const s of dirtyRows) {
      if (visibleRows.has(s)) {
        renderRow(s);
        dirtyRows.delete(s);
      }
    }
    for (const s of dirtyCharts) if (charted.has(s.name)) renderChart(s);
    dirtyCharts.clear();
    stats.renderMs = performance.now() - began;
  }

  // Canvas size follows its card; redraw every chart when the layout changes size.
  // Canvas sizes come from a ResizeObserver, never from reading clientWidth in a
  // frame: that read would force a synchronous layout after the table updates.
  const canvasSizes = new WeakMap();
  const resizeObserver = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const box = entry.contentRect;
      canvasSizes.set(entry.target, { w: Math.floor(box.width), h: Math.floor(box.height) });
      const s = symbols.get(entry.target.dataset.symbol);
      if (s) dirtyCharts.add(s);
    }
    requestFrame();
  });

  // ---- chart mode toggle -----------------------------------------------------------
  function setMode(mode) {
    chartMode = mode === "candles" ? "candles" : "line";
    for (const b of document.querySelectorAll(".toggle button")) {
      b.setAttribute("aria-pressed", String(b.dataset.mode === chartMode));
    }
    try {
      localStorage.setItem("quoteflow.chartMode", chartMode);
    } catch (_) {
      // storage may be unavailable (private mode, sandboxed iframe): not needed
    }
    if (chartMode === "candles") backfill([...charted]);
    layoutDirty = true;
    requestFrame();
  }

  for (const b of document.querySelectorAll(".toggle button")) {
    b.addEventListener("click", () => setMode(b.dataset.mode));
  }
  let savedMode = pageParams.get("chart");
  if (!savedMode) {
    try {
      savedMode = localStorage.getItem("quoteflow.chartMode");
    } catch (_) {
      savedMode = null;
    }
  }
  setMode(savedMode || "line");

  // ---- read-only view for tests and the browser console ------------------------------
  const view = {};
  const getters = {
    state: () => conn.state,
    states: () => conn.states.slice(),
    reconnects: () => conn.reconnects,
    eventsReceived: () => stats.eventsReceived,
    ticks: () => stats.ticks,
    bars: () => stats.bars,
    resets: () => stats.resets,
    badEvents: () => stats.badEvents,
    lastEventId: () => stats.lastEventId,
    ids: () => stats.ids.slice(),
    eventsPerSecond: () => stats.rate,
    framesRendered: () => stats.framesRendered,
    renderMs: () => stats.renderMs,
    chartMode: () => chartMode,
    charted: () => [...charted].sort(),
    symbols: () => [...symbols.keys()].sort(),
    lastPrices: () => Object.fromEntries([...symbols].map(([n, s]) => [n, s.last])),
    candles: () =>
      Object.fromEntries(
        [...symbols].map(([n, s]) => [
          n,
          { final: s.candles.filter((c) => c.final).length, total: s.candles.length, drawn: s.drawnCandles },
        ])
      ),
    streamUrl: () => (conn.source ? conn.source.url : ""),
    historyBars: () => backfilled.bars,
    candleStarts: () => (name) =>
      (symbols.get(name) ? symbols.get(name).candles : []).filter((c) => c.final).map((c) => c.start),
    drawnAtFirstBar: () => backfilled.drawnAtFirstBar,
  };
  for (const [name, get] of Object.entries(getters)) {
    Object.defineProperty(view, name, { get, enumerable: true });
  }
  Object.defineProperty(window, "quoteflowDashboard", { value: Object.freeze(view), enumerable: true });

  // History first, drawn, then the stream from where it ends. Without /symbols or
  // /history (an older server) the page simply starts live.
  const twoFrames = () =>
    new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  loadMetadata()
    .then(() => backfill([...charted]))
    .then((ids) => {
      requestFrame();
      return twoFrames().then(() => connect(oldestId(ids)));
    })
    .catch(() => connect(""));
  requestFrame();
})();
