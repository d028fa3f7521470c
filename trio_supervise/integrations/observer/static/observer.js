// The trio-supervise observer page: a live view of a supervision tree.
// Plain JavaScript, no build step. Everything from the server is put into the page as
// text (textContent, SVG text nodes): never as HTML.
"use strict";

(() => {
  const ROW_H = 28;              // px, a tree row (the same as .row in observer.css)
  const OVERSCAN = 8;            // rows rendered above and below the viewport
  const EVENTS_SHOWN = 200;      // events kept in the list
  const TIMELINE_KEEP = 900;     // seconds of restarts kept for the timeline
  const TIMELINE_MAX_MARKS = 20000;
  const TIMELINE_ROWS = 8;
  const COLLAPSE_ABOVE = 200;    // a supervisor first seen with more children starts collapsed
  const TOKEN_KEY = "trio-supervise-observer-token";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATES = ["starting", "running", "restarting", "stopping", "stopped"];
  const BANDS = ["stop accepting", "drain", "flush", "close", "cleanup"];
  const TIMELINE_KINDS = new Set([
    "crashed", "start_failed", "restarted", "restart_scheduled", "intensity_exceeded",
    "stop_timeout", "terminated", "lock_lost",
  ]);
  const DOWN_KINDS = new Set(["crashed", "start_failed", "lock_lost"]);
  const UP_KINDS = new Set(["restarted", "started", "lock_acquired"]);

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ state
  // The page's own measures, for benchmarks: firstRenderMs (from the navigation to the first
  // tree laid out), snapshotMs (the page's own part of it: the snapshot parsed and drawn) and
  // lastUpdateMs (a delta applied and the rows redrawn) are absent until measured.
  const stats = { updates: 0, snapshots: 0, maxUpdateMs: 0, totalUpdateMs: 0, nodes: 0,
                  visibleRows: 0, domRows: 0 };
  window.observerStats = stats;

  const model = {
    nodes: new Map(),            // path -> node (the server's fields, and children paths)
    root: null,
    clock: { now: 0, at: performance.now() },   // the server's trio clock at a local time
    actions: false,
    connected: false,
  };
  const view = {
    visible: [],                 // the nodes shown, in order, as flat rows
    collapsed: new Set(),        // paths collapsed by the user (no filter)
    filterCollapsed: new Set(),  // paths collapsed while a filter is on (reset when it changes)
    seen: new Set(),             // supervisors seen once (for the first collapse)
    selected: null,
    filter: { text: "", state: "", health: "", errors: false },
    structureDirty: true,
    rowsDirty: true,
    slots: [],                   // row elements, reused
    timelineWindow: 300,
    traceback: new Map(),        // path -> {error, text} fetched
    detailKey: "",
  };
  const marks = [];              // timeline: {path, kind, time}
  let shutdownReport = null;
  let source = null;
  let reconnectTimer = null;
  let renderQueued = false;

  function serverNow() {
    return model.clock.now + (performance.now() - model.clock.at) / 1000;
  }
  function setClock(now) {
    model.clock = { now, at: performance.now() };
  }

  // ------------------------------------------------------------------ helpers
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function parentPath(path) {
    const i = path.lastIndexOf("/");
    return i < 0 ? "" : path.slice(0, i);
  }
  function join(parent, name) {
    return parent === "" ? name : parent + "/" + name;
  }
  function seconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    const a = Math.abs(s);
    if (a < 1) return (s * 1000).toFixed(0) + " ms";
    if (a < 10) return s.toFixed(1) + " s";
    if (a < 120) return s.toFixed(0) + " s";
    if (a < 7200) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function two(n) { return n < 10 ? "0" + n : String(n); }
  function wallTime(t) {
    // A time on the server's clock as the local time of day it happened at.
    const d = new Date(Date.now() - (serverNow() - t) * 1000);
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) +
      "." + String(Math.floor(d.getMilliseconds() / 100));
  }
  function apiUrl(rest) {
    return new URL("api/" + rest, document.baseURI).href;
  }
  function childUrl(path, what) {
    return apiUrl("children/" + path.split("/").map(encodeURIComponent).join("/") + "/" + what);
  }
  function inBackoff(n) {
    return n.state === "restarting" && typeof n.restart_at === "number";
  }

  // ------------------------------------------------------------------ the model
  // Counts over every child (the root aside), kept up to date as nodes change, so that
  // an update costs the same for 10 children as for 10,000.
  let agg = null;
  function resetCounts() {
    agg = { state: {}, health: {}, backoff: 0, errors: 0 };
  }
  function count(n, sign) {
    if (n.path === "") return;
    agg.state[n.state] = (agg.state[n.state] || 0) + sign;
    agg.health[n.health] = (agg.health[n.health] || 0) + sign;
    if (inBackoff(n)) agg.backoff += sign;
    if (n.last_error) agg.errors += sign;
  }
  resetCounts();
  function prepare(n, fields) {
    Object.assign(n, fields);
    if (n.path === "") n.serverHealth = fields.health;   // the root's: see rootHealth()
    n.lc = n.path.toLowerCase();
    n.v = (n.v || 0) + 1;
    return n;
  }
  function loadSnapshot(data) {
    const nodes = new Map();
    resetCounts();
    const visit = (raw, depth) => {
      // The parsed object becomes the node: no copy of 10,000 objects.
      const kids = raw.children || [];
      const n = raw;
      n.children = kids.map((k) => k.path);
      n.depth = depth;
      n.lc = n.path.toLowerCase();
      n.v = 1;
      if (n.path === "") n.serverHealth = n.health;
      nodes.set(n.path, n);
      count(n, 1);
      if (n.kind === "supervisor" && n.path !== "" && !view.seen.has(n.path)) {
        view.seen.add(n.path);
        if (kids.length > COLLAPSE_ABOVE) view.collapsed.add(n.path);
      }
      for (const k of kids) visit(k, depth + 1);
    };
    visit(data.tree, 0);
    model.nodes = nodes;
    model.root = nodes.get(data.tree.path);
    view.structureDirty = true;
  }
  function applyChanges(data) {
    const nodes = model.nodes;
    let structure = false;
    for (const raw of data.nodes || []) {
      let n = nodes.get(raw.path);
      if (n) {
        const children = n.children;
        count(n, -1);
        prepare(n, raw);
        n.children = children;
        count(n, 1);
        if (view.filterActive) structure = true;   // it may match the filter now, or not
      } else {
        const parent = nodes.get(parentPath(raw.path));
        n = prepare({ depth: parent ? parent.depth + 1 : 1, children: [] }, raw);
        nodes.set(n.path, n);
        count(n, 1);
        if (parent && !parent.children.includes(n.path)) parent.children.push(n.path);
        structure = true;
      }
    }
    for (const path of data.removed || []) {
      const n = nodes.get(path);
      if (!n) continue;
      nodes.delete(path);
      count(n, -1);
      const parent = nodes.get(parentPath(path));
      if (parent) parent.children = parent.children.filter((p) => p !== path);
      if (view.selected === path) view.selected = null;
      structure = true;
    }
    for (const parentP in data.order || {}) {
      const parent = nodes.get(parentP);
      if (!parent) continue;
      const listed = data.order[parentP].map((name) => join(parentP, name));
      const rest = parent.children.filter((p) => !listed.includes(p) && nodes.has(p));
      parent.children = listed.filter((p) => nodes.has(p)).concat(rest);
      structure = true;
    }
    if (structure) view.structureDirty = true;
    view.rowsDirty = true;
  }
  function rootHealth() {
    // The root's health sums up the whole tree, and the changes never carry the root
    // (nothing happens to it): derive it as the tree does, from its children.
    const root = model.root;
    if (!root) return "unknown";
    if (root.serverHealth === "unhealthy" || root.state !== "running") return root.serverHealth;
    return (agg.health.degraded || 0) + (agg.health.unhealthy || 0) > 0 ? "degraded" : "healthy";
  }

  // ------------------------------------------------------------------ filtering
  function readFilter() {
    const f = view.filter;
    const text = $("filter").value.trim().toLowerCase();
    const state = $("state-filter").value;
    const health = $("health-filter").value;
    const errors = $("errors-only").checked;
    if (text !== f.text || state !== f.state || health !== f.health || errors !== f.errors) {
      view.filter = { text, state, health, errors };
      view.filterCollapsed.clear();
      view.structureDirty = true;
    }
    view.filterActive = !!(text || state || health || errors);
  }
  function matches(n) {
    const f = view.filter;
    if (f.text && !n.lc.includes(f.text)) return false;
    if (f.state) {
      if (f.state === "backoff") { if (!inBackoff(n)) return false; }
      else if (f.state === "not-running") { if (n.state === "running") return false; }
      else if (n.state !== f.state) return false;
    }
    if (f.health) {
      if (f.health === "not-healthy") { if (n.health === "healthy") return false; }
      else if (n.health !== f.health) return false;
    }
    if (f.errors && !n.last_error) return false;
    return true;
  }
  function computeVisible() {
    const t0 = performance.now();
    const nodes = model.nodes;
    const out = [];
    const root = model.root;
    // The rows: depth first, below each row not in ``collapsed``, the children ``keep`` lets in.
    const walk = (n, depth, collapsed, keep) => {
      n.depth = depth;
      out.push(n);
      if (collapsed.has(n.path)) return;
      for (const p of n.children) {
        const c = nodes.get(p);
        if (c && keep(c)) walk(c, depth + 1, collapsed, keep);
      }
    };
    if (root) {
      if (!view.filterActive) {
        walk(root, 0, view.collapsed, () => true);
      } else {
        // Which nodes match or hold a match, then the rows: the matches and their ancestors.
        const hit = new Set();
        const mark = (n) => {
          let any = matches(n);
          n.self = any;
          for (const p of n.children) {
            const c = nodes.get(p);
            if (c && mark(c)) any = true;
          }
          if (any) hit.add(n);
          return any;
        };
        mark(root);
        if (hit.has(root)) walk(root, 0, view.filterCollapsed, (c) => hit.has(c));
        stats.matches = hit.size;
      }
    }
    view.visible = out;
    view.structureDirty = false;
    stats.lastFilterMs = performance.now() - t0;
    stats.visibleRows = out.length;
  }

  // ------------------------------------------------------------------ the tree rows
  function makeRow() {
    const row = el("div", "row");
    row.setAttribute("role", "row");
    const name = el("div", "c-name");
    const toggle = el("button", "toggle");
    toggle.type = "button";
    name.append(toggle, el("span", "name"), el("span", "count"));
    const stateCell = el("div", "c-state");
    stateCell.append(el("span", "state"), el("span", "backoff"));
    const health = el("div", "c-health");
    health.append(el("span", "health"));
    const info = el("div", "c-info");
    info.append(el("span", "pid"), el("span", "err"), el("span", "note"));
    const actions = el("div", "c-actions");
    for (const [action, label, title] of [
      ["restart", "↻", "restart it now (resets its backoff)"],
      ["terminate", "■", "terminate: stop it and keep it stopped"],
      ["start", "▶", "start it again"],
    ]) {
      const b = el("button", "act act-" + action, label);
      b.type = "button";
      b.dataset.action = action;
      b.title = title;
      b.setAttribute("aria-label", action);
      actions.append(b);
    }
    row.append(name, el("div", "c-kind kind"), stateCell, el("div", "c-restarts restarts"),
               health, info, actions);
    row._parts = {
      name: name, toggle, label: name.children[1], count: name.children[2],
      kind: row.children[1], state: stateCell.children[0], backoff: stateCell.children[1],
      restarts: row.children[3], health: health.children[0], pid: info.children[0],
      err: info.children[1], note: info.children[2], actions: actions.children,
    };
    return row;
  }
  function backoffText(n) {
    if (!inBackoff(n)) return "";
    const left = n.restart_at - serverNow();
    return left > 0 ? "retry in " + left.toFixed(1) + " s" : "retry due";
  }
  function fillRow(row, n, index) {
    const expanded = isExpanded(n);
    const key = n.v + "|" + expanded + "|" + (view.selected === n.path) + "|" + model.actions +
      "|" + n.depth + "|" + (view.filterActive ? (n.self ? 1 : 2) : 0);
    if (row._node !== n) {
      row._node = n;
      row.dataset.path = n.path;
    }
    if (row._index !== index) {
      row._index = index;
      row.style.transform = "translateY(" + index * ROW_H + "px)";
    }
    const p = row._parts;
    if (row._key !== key) {
      row._key = key;
      row.dataset.state = n.state;
      row.classList.toggle("selected", view.selected === n.path);
      row.classList.toggle("context", view.filterActive && !n.self);
      p.name.style.paddingLeft = (6 + n.depth * 16) + "px";
      const hasKids = n.children.length > 0;
      p.toggle.textContent = hasKids ? (expanded ? "▾" : "▸") : "";
      p.toggle.disabled = !hasKids;
      p.toggle.title = hasKids ? (expanded ? "collapse" : "expand") : "";
      p.toggle.setAttribute("aria-label", hasKids ? (expanded ? "collapse" : "expand") : "leaf");
      p.label.textContent = n.path === "" ? n.name + " (root)" : n.name;
      p.label.title = n.path === "" ? "the root supervisor" : n.path;
      p.count.textContent = n.kind === "supervisor" ? String(n.children.length) : "";
      p.count.title = n.children.length + " children";
      p.kind.textContent = n.kind;
      p.kind.className = "c-kind kind k-" + n.kind;
      p.state.textContent = n.state;
      p.state.className = "state st-" + n.state + (inBackoff(n) ? " st-backoff" : "");
      p.restarts.textContent = String(n.restarts);
      p.restarts.classList.toggle("nonzero", n.restarts > 0);
      p.health.textContent = n.health;
      p.health.className = "health h-" + n.health;
      p.pid.textContent = n.pid === null || n.pid === undefined ? "" : "pid " + n.pid;
      p.err.textContent = n.last_error || "";
      p.err.title = n.last_error ? n.last_error + "\n(click for the traceback)" : "";
      const notes = [];
      if (n.lock_holder) notes.push("lock: " + n.lock_holder);
      if (n.status) notes.push("status: " + n.status);
      const tail = n.output_tail || [];
      if (tail.length) notes.push("› " + tail[tail.length - 1]);
      p.note.textContent = notes.join("  ·  ");
      p.note.title = notes.join("\n");
      const [restart, terminate, start] = p.actions;
      const canAct = model.actions && n.path !== "";
      restart.hidden = !canAct || n.state === "stopped" || n.state === "stopping";
      terminate.hidden = !canAct || n.state === "stopped" || n.state === "stopping";
      start.hidden = !canAct || n.state !== "stopped";
    }
    p.backoff.textContent = backoffText(n);
  }
  function isExpanded(n) {
    return view.filterActive ? !view.filterCollapsed.has(n.path) : !view.collapsed.has(n.path);
  }
  function renderTree() {
    readFilter();
    if (view.structureDirty) computeVisible();
    const box = $("tree");
    const spacer = $("tree-spacer");
    const visible = view.visible;
    spacer.style.height = visible.length * ROW_H + "px";
    // The scroll position and height as last seen (a scroll, a resize): reading them here
    // would force a layout of the whole page on every update.
    const top = view.scrollTop;
    const height = view.height || 600;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    const need = Math.max(0, last - first);
    const slots = view.slots;
    while (slots.length < need) {
      const row = makeRow();
      slots.push(row);
      box.append(row);
    }
    for (let k = 0; k < slots.length; k++) {
      const row = slots[k];
      if (k < need) {
        if (row.hidden) row.hidden = false;
        fillRow(row, visible[first + k], first + k);
      } else if (!row.hidden) {
        row.hidden = true;
        row._node = null;
        row._key = "";
        delete row.dataset.path;
      }
    }
    const empty = $("tree-empty");
    empty.hidden = visible.length > 0;
    if (!visible.length) empty.textContent = model.root ? "No child matches the filter." : "Waiting for the tree…";
    const total = Math.max(0, model.nodes.size - 1);
    $("shown").textContent = view.filterActive
      ? (stats.matches ? countMatches() : 0) + " of " + total + " children match"
      : Math.max(0, visible.length - 1) + " of " + total + " children shown" +
        (visible.length - 1 < total ? " (the rest in collapsed branches)" : "");
    stats.domRows = need;
    stats.nodes = model.nodes.size;
    view.rowsDirty = false;
  }
  function countMatches() {
    let c = 0;
    for (const n of view.visible) if (n.self && n.path !== "") c++;
    return c;
  }
  function updateBackoffs() {
    for (const row of view.slots) {
      if (!row.hidden && row._node) row._parts.backoff.textContent = backoffText(row._node);
    }
  }

  // ------------------------------------------------------------------ header
  function renderHeader() {
    const rh = rootHealth();
    const badge = $("root-health");
    if (badge.textContent !== rh) {
      badge.textContent = rh;
      badge.className = "badge health h-" + rh;
    }
    if (model.root) $("tree-name").textContent = model.root.name;
    const key = JSON.stringify(agg) + model.nodes.size;
    if (key === view.summaryKey) return;
    view.summaryKey = key;
    const counts = agg.state, healths = agg.health, backoff = agg.backoff;
    const box = $("summary");
    box.replaceChildren();
    box.append(el("span", "sum-total", (model.nodes.size ? model.nodes.size - 1 : 0) + " children"));
    // A chip filters the tree by its state or health (see the click handler below).
    const chip = (cls, text, filter, value, title) => {
      const b = el("button", "chip " + cls, text);
      b.type = "button";
      b.dataset[filter] = value;
      b.title = title;
      box.append(b);
    };
    for (const s of STATES) {
      if (counts[s]) chip("st-" + s, counts[s] + " " + s, "state", s, "show only the " + s + " children");
    }
    if (backoff) chip("st-backoff", backoff + " in backoff", "state", "backoff", "show only the children in backoff");
    for (const h of ["degraded", "unhealthy"]) {
      if (healths[h]) chip("h-" + h, healths[h] + " " + h, "health", h, "show only the " + h + " children");
    }
  }

  // ------------------------------------------------------------------ details
  function renderDetail(force) {
    const box = $("detail");
    const n = view.selected !== null ? model.nodes.get(view.selected) : null;
    const tb = n ? view.traceback.get(n.path) : null;
    const key = n ? n.path + "|" + n.v + "|" + model.actions + "|" + (tb ? tb.state : "") : "none";
    if (!force && key === view.detailKey) {
      updateDetailTimes(n);
      return;
    }
    const openOutput = box.querySelector("details.output");
    const keepOpen = openOutput ? openOutput.open : false;
    view.detailKey = key;
    box.replaceChildren();
    box.classList.toggle("nothing", !n);
    if (!n) {
      box.append(el("p", "hint", "Select a child to see its details, its last error's traceback and its output."));
      return;
    }
    const head = el("div", "detail-head");
    head.append(el("h2", "detail-path", n.path === "" ? n.name + " (root supervisor)" : n.path));
    head.append(el("span", "badge kind k-" + n.kind, n.kind));
    head.append(el("span", "badge state st-" + n.state + (inBackoff(n) ? " st-backoff" : ""), n.state));
    head.append(el("span", "badge health h-" + n.health, n.health));
    const acts = el("span", "detail-actions");
    if (model.actions && n.path !== "") {
      for (const [action, label] of [["restart", "↻ restart"], ["terminate", "■ terminate"], ["start", "▶ start"]]) {
        if (action === "start" ? n.state !== "stopped" : (n.state === "stopped" || n.state === "stopping")) continue;
        const b = el("button", "act act-" + action, label);
        b.type = "button";
        b.dataset.action = action;
        b.dataset.target = n.path;
        acts.append(b);
      }
    } else if (!model.actions) {
      acts.append(el("span", "muted", "read-only"));
    }
    head.append(acts);
    box.append(head);

    const dl = el("dl", "fields");
    const field = (label, value, cls) => {
      dl.append(el("dt", "", label));
      const dd = el("dd", cls || "", value);
      dl.append(dd);
      return dd;
    };
    field("restarts", String(n.restarts));
    field("started", n.started_at === null ? "not yet" : "", "t-started");
    if (inBackoff(n)) field("restart", "", "t-backoff");
    if (n.pid !== null && n.pid !== undefined) field("pid", String(n.pid));
    if (n.status) field("status", n.status);
    if (n.lock_holder) field("lock holder", n.lock_holder);
    if (n.kind === "supervisor") field("children", String(n.children.length));
    box.append(dl);
    updateDetailTimes(n);

    if (n.last_error) {
      const err = el("div", "last-error");
      err.append(el("h3", "", "last error"), el("div", "err-text", n.last_error));
      const btn = el("button", "show-tb", tb && tb.state === "loaded" ? "refresh traceback" : "show full traceback");
      btn.type = "button";
      btn.dataset.traceback = n.path;
      err.append(btn);
      if (tb) {
        if (tb.state === "loading") err.append(el("p", "muted", "loading the traceback…"));
        else if (tb.state === "error") err.append(el("p", "bad", tb.text));
        else err.append(el("pre", "traceback", tb.text));
      }
      box.append(err);
    }
    const tail = n.output_tail || [];
    if (tail.length) {
      const d = el("details", "output");
      d.open = keepOpen;
      const summary = el("summary", "", "output: last " + tail.length + " line" + (tail.length === 1 ? "" : "s"));
      d.append(summary);
      const pre = el("pre", "tail", tail.join("\n"));
      d.append(pre);
      // The newest lines are the news: show the end of the output.
      d.addEventListener("toggle", () => { if (d.open) pre.scrollTop = pre.scrollHeight; });
      box.append(d);
      if (d.open) pre.scrollTop = pre.scrollHeight;
    }
  }
  function updateDetailTimes(n) {
    if (!n) return;
    const box = $("detail");
    const started = box.querySelector(".t-started");
    if (started && n.started_at !== null) {
      started.textContent = wallTime(n.started_at) + " (" + seconds(serverNow() - n.started_at) + " ago)";
    }
    const b = box.querySelector(".t-backoff");
    if (b) b.textContent = backoffText(n) || "–";
  }
  async function loadTraceback(path) {
    view.traceback.set(path, { state: "loading" });
    renderDetail(true);
    let entry;
    try {
      const r = await fetch(childUrl(path, "error"), { headers: { Accept: "application/json" } });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) entry = { state: "error", text: body.error || ("HTTP " + r.status) };
      else entry = { state: "loaded", text: body.traceback || "(no error now)" };
    } catch (e) {
      entry = { state: "error", text: "could not load the traceback: " + e.message };
    }
    view.traceback.set(path, entry);
    if (view.selected === path) renderDetail(true);
  }
  function select(path) {
    if (view.selected === path) return;
    view.selected = path;
    view.rowsDirty = true;
    scheduleRender();
  }

  // ------------------------------------------------------------------ events
  const KIND_CLASS = {
    crashed: "bad", start_failed: "bad", intensity_exceeded: "bad", stop_timeout: "warn",
    lock_lost: "warn", restart_scheduled: "warn", terminated: "muted2", removed: "muted2",
    exited: "muted2", started: "good", restarted: "good", lock_acquired: "good",
    health_changed: "info", shutdown_started: "warn", shutdown_finished: "info",
    hook_finished: "info", reloaded: "info",
  };
  function eventItem(e) {
    const li = el("li", "ev ev-" + (KIND_CLASS[e.kind] || "info"));
    li.append(el("time", "ev-time", wallTime(e.time)));
    li.append(el("span", "ev-kind", e.kind.replace(/_/g, " ")));
    const hook = e.kind === "hook_finished" || e.kind === "reloaded";
    const path = el("span", "ev-path", hook ? "hook " + e.path : (e.path === "" ? "(root)" : e.path));
    if (!hook) path.dataset.select = e.path;
    path.title = path.textContent;
    li.append(path);
    // A scheduled restart repeats the crash's error: its delay is the news.
    const text = e.kind === "restart_scheduled" ? e.detail : [e.error, e.detail].filter(Boolean).join(" — ");
    if (text) {
      const d = el("span", "ev-detail", text);
      d.title = text;
      li.append(d);
    }
    return li;
  }
  function addEvents(events, reset) {
    const list = $("events");
    if (reset) list.replaceChildren();
    const take = events.slice(-EVENTS_SHOWN);
    const frag = document.createDocumentFragment();
    for (let i = take.length - 1; i >= 0; i--) frag.append(eventItem(take[i]));
    list.prepend(frag);
    while (list.childElementCount > EVENTS_SHOWN) list.lastElementChild.remove();
    $("events-count").textContent = "last " + list.childElementCount;
    for (const e of events) {
      if (TIMELINE_KINDS.has(e.kind) || e.kind === "started") {
        marks.push({ path: e.path, kind: e.kind, time: e.time });
      }
    }
    const cutoff = serverNow() - TIMELINE_KEEP;
    let drop = 0;
    while (drop < marks.length && (marks[drop].time < cutoff || marks.length - drop > TIMELINE_MAX_MARKS)) drop++;
    if (drop) marks.splice(0, drop);
  }

  // ------------------------------------------------------------------ restart timeline
  function renderTimeline() {
    const box = $("timeline-box");
    const s = $("timeline");
    const width = Math.max(300, box.clientWidth);
    const now = serverNow();
    const span = view.timelineWindow;
    const from = now - span;
    // One row per child that crashed or restarted in the window, most recent first.
    const byPath = new Map();
    for (const m of marks) {
      if (m.time < from || m.kind === "started") continue;
      let r = byPath.get(m.path);
      if (!r) byPath.set(m.path, (r = { path: m.path, last: m.time, n: 0 }));
      r.last = Math.max(r.last, m.time);
      if (m.kind !== "restart_scheduled") r.n++;
    }
    const rows = [...byPath.values()].sort((a, b) => b.last - a.last);
    const shown = rows.slice(0, TIMELINE_ROWS);
    const labelW = 150, right = 12, top = 6, rowH = 18, axisH = 20;
    const height = top + Math.max(1, shown.length) * rowH + axisH + 18;
    s.setAttribute("width", width);
    s.setAttribute("height", height);
    s.setAttribute("viewBox", "0 0 " + width + " " + height);
    s.replaceChildren();
    const plotW = width - labelW - right;
    const x = (t) => labelW + ((t - from) / span) * plotW;
    const axisY = top + Math.max(1, shown.length) * rowH;
    // The grid and the axis.
    const step = span <= 60 ? 10 : span <= 300 ? 60 : 180;
    for (let ago = 0; ago <= span; ago += step) {
      const gx = x(now - ago);
      s.append(svg("line", { x1: gx, x2: gx, y1: top, y2: axisY, class: "grid" }));
      s.append(svg("text", { x: gx, y: axisY + 14, class: "axis", "text-anchor": ago === 0 ? "end" : "middle" },
        ago === 0 ? "now" : "−" + (ago < 60 ? ago + " s" : ago / 60 + " min")));
    }
    if (!shown.length) {
      s.replaceChildren();
      s.append(svg("text", { x: labelW + plotW / 2, y: top + 13, class: "empty-text", "text-anchor": "middle" },
        "no crash or restart in the last " + (span < 60 ? span + " s" : span / 60 + " min")));
    }
    const kids = new Map(shown.map((r, i) => [r.path, i]));
    // Downtime: from a crash to the next start.
    const down = new Map();
    const bars = [];
    for (const m of marks) {
      const i = kids.get(m.path);
      if (i === undefined) continue;
      if (DOWN_KINDS.has(m.kind) || m.kind === "terminated") {
        if (!down.has(m.path)) down.set(m.path, m);
      } else if (UP_KINDS.has(m.kind)) {
        const d = down.get(m.path);
        if (d) { bars.push([i, d.time, m.time, d.kind]); down.delete(m.path); }
      }
    }
    for (const [path, d] of down) {
      const n = model.nodes.get(path);
      if (n && n.state !== "running") bars.push([kids.get(path), d.time, now, d.kind]);
    }
    shown.forEach((r, i) => {
      const y = top + i * rowH;
      if (i % 2) s.append(svg("rect", { x: 0, y, width, height: rowH, class: "stripe" }));
      const label = r.path.length > 19 ? "…" + r.path.slice(-18) : r.path;
      const t = svg("text", { x: labelW - 8, y: y + 13, class: "label", "text-anchor": "end", "data-select": r.path }, label);
      t.append(svg("title", {}, r.path + ": " + r.n + " crash/restart events in the window"));
      s.append(t);
    });
    for (const [i, t0, t1, kind] of bars) {
      const x0 = Math.max(labelW, x(t0)), x1 = Math.min(labelW + plotW, x(t1));
      if (x1 <= labelW) continue;
      s.append(svg("rect", { x: x0, y: top + i * rowH + 5, width: Math.max(1, x1 - x0), height: rowH - 10,
                             class: "down down-" + (kind === "terminated" ? "terminated" : "crash") }));
    }
    for (const m of marks) {
      const i = kids.get(m.path);
      if (i === undefined || m.time < from || m.kind === "started") continue;
      const cx = x(m.time), cy = top + i * rowH + rowH / 2;
      let shape;
      if (m.kind === "crashed" || m.kind === "start_failed" || m.kind === "lock_lost") {
        shape = svg("path", { d: `M${cx - 4} ${cy - 4}L${cx + 4} ${cy + 4}M${cx + 4} ${cy - 4}L${cx - 4} ${cy + 4}`, class: "mk mk-" + m.kind });
      } else if (m.kind === "restarted") {
        shape = svg("circle", { cx, cy, r: 3.5, class: "mk mk-restarted" });
      } else if (m.kind === "intensity_exceeded") {
        shape = svg("rect", { x: cx - 4, y: cy - 7, width: 8, height: 14, class: "mk mk-intensity" });
      } else if (m.kind === "restart_scheduled") {
        continue;
      } else {
        shape = svg("rect", { x: cx - 3, y: cy - 3, width: 6, height: 6, class: "mk mk-" + m.kind });
      }
      shape.append(svg("title", {}, m.path + ": " + m.kind.replace(/_/g, " ") + " at " + wallTime(m.time)));
      s.append(shape);
    }
    // The legend.
    const ly = height - 5;
    let lx = 8;
    const legend = [["mk mk-crashed", "crash", "x"], ["mk mk-restarted", "restart", "o"],
                    ["down down-crash", "down", "bar"], ["mk mk-intensity", "gave up", "tall"],
                    ["mk mk-terminated", "terminated/timeout", "sq"]];
    for (const [cls, text, shape] of legend) {
      const cy = ly - 4;
      if (shape === "x") s.append(svg("path", { d: `M${lx} ${cy - 4}L${lx + 8} ${cy + 4}M${lx + 8} ${cy - 4}L${lx} ${cy + 4}`, class: cls }));
      else if (shape === "o") s.append(svg("circle", { cx: lx + 4, cy, r: 3.5, class: cls }));
      else if (shape === "bar") s.append(svg("rect", { x: lx, y: cy - 4, width: 14, height: 8, class: cls }));
      else if (shape === "tall") s.append(svg("rect", { x: lx + 1, y: cy - 6, width: 6, height: 12, class: cls }));
      else s.append(svg("rect", { x: lx + 1, y: cy - 3, width: 6, height: 6, class: cls }));
      const t = svg("text", { x: lx + 18, y: ly, class: "legend" }, text);
      s.append(t);
      lx += 26 + text.length * 6.5;
    }
    if (rows.length > shown.length) {
      s.append(svg("text", { x: width - right, y: ly, class: "legend", "text-anchor": "end" },
        "+" + (rows.length - shown.length) + " more"));
    }
  }

  // ------------------------------------------------------------------ shutdown Gantt chart
  function renderGantt() {
    const box = $("gantt-box");
    const s = $("gantt");
    const summary = $("shutdown-summary");
    const width = Math.max(300, box.clientWidth);
    s.replaceChildren();
    const r = shutdownReport;
    if (!r) {
      summary.textContent = "";
      s.setAttribute("width", width);
      s.setAttribute("height", 40);
      s.setAttribute("viewBox", "0 0 " + width + " 40");
      s.append(svg("text", { x: width / 2, y: 24, class: "empty-text", "text-anchor": "middle" }, "no shutdown yet"));
      return;
    }
    const flags = [];
    flags.push(r.ok ? "ok" : "not ok");
    if (r.forced) flags.push("forced");
    if (r.deadline_exceeded) flags.push("deadline exceeded");
    summary.textContent = (r.reason || "") + " · " + seconds(r.duration) + " · " + flags.join(", ");
    summary.className = r.ok ? "good" : "bad";
    const hooks = r.hooks.map((h, i) => ({ ...h, i })).sort((a, b) => a.priority - b.priority || a.i - b.i);
    const end = Math.max(r.duration || 0,
      ...hooks.map((h) => (h.started === null ? 0 : h.started - r.started + h.duration)), 0.001);
    const labelW = 150, right = 12, top = 2, rowH = 20, bandH = 15, axisH = 22;
    // The rows: each band's header, then its hooks.
    const rows = [];
    for (const h of hooks) {
      if (!rows.length || rows[rows.length - 1].band !== h.band) rows.push({ band: h.band, hooks: [] });
      rows[rows.length - 1].hooks.push(h);
    }
    const plotH = rows.reduce((sum, b) => sum + bandH + b.hooks.length * rowH, 0);
    const height = top + plotH + axisH + 18;
    s.setAttribute("width", width);
    s.setAttribute("height", height);
    s.setAttribute("viewBox", "0 0 " + width + " " + height);
    const plotW = width - labelW - right;
    const x = (t) => labelW + (t / end) * plotW;
    const axisY = top + plotH;
    let y = top;
    rows.forEach((b, k) => {
      const h = bandH + b.hooks.length * rowH;
      s.append(svg("rect", { x: 0, y, width, height: h, class: "band band-" + (k % 2) }));
      b.y = y + bandH;
      y += h;
    });
    // The time axis.
    const ticks = niceTicks(end, Math.max(2, Math.floor(plotW / 80)));
    for (const t of ticks) {
      const gx = x(t);
      s.append(svg("line", { x1: gx, x2: gx, y1: top, y2: axisY, class: "grid" }));
      s.append(svg("text", { x: gx, y: axisY + 14, class: "axis", "text-anchor": t === 0 ? "start" : "middle" }, seconds(t)));
    }
    for (const b of rows) {
      s.append(svg("text", { x: 6, y: b.y - 4, class: "band-label" },
        (BANDS[b.band] || "band " + b.band) + " · priority " + b.band * 10 + "–" + (b.band * 10 + 9)));
      b.hooks.forEach((h, k) => {
        const y = b.y + k * rowH;
        const name = h.name.length > 19 ? h.name.slice(0, 18) + "…" : h.name;
        const label = svg("text", { x: labelW - 8, y: y + 14, class: "label", "text-anchor": "end" }, name);
        label.append(svg("title", {}, h.name + " (priority " + h.priority + ")"));
        s.append(label);
        const tip = h.name + ": " + h.status.replace(/_/g, " ") +
          (h.started === null ? "" : " after " + seconds(h.duration)) +
          ", priority " + h.priority + (h.error ? "\n" + h.error : "");
        if (h.started === null) {
          const t = svg("text", { x: labelW + 4, y: y + 14, class: "hook-note" }, h.status.replace(/_/g, " "));
          t.append(svg("title", {}, tip));
          s.append(t);
          return;
        }
        const x0 = x(h.started - r.started);
        const w = Math.max(2, (h.duration / end) * plotW);
        const bar = svg("rect", { x: x0, y: y + 4, width: w, height: rowH - 8, rx: 2, class: "hook hook-" + h.status });
        bar.append(svg("title", {}, tip));
        s.append(bar);
        const note = seconds(h.duration) + (h.status === "ok" ? "" : " " + h.status.replace(/_/g, " "));
        // The note after the bar, or before it when it would run off the chart.
        const after = x0 + w + 4 + note.length * 6.2 <= width - 2;
        const t = svg("text", { x: after ? x0 + w + 4 : x0 - 4, y: y + 14, class: "hook-note",
                                "text-anchor": after ? "start" : "end" }, note);
        t.append(svg("title", {}, tip));
        s.append(t);
      });
    }
    // The legend.
    const ly = height - 5;
    let lx = 8;
    for (const st of ["ok", "error", "timed_out", "cancelled", "skipped"]) {
      s.append(svg("rect", { x: lx, y: ly - 9, width: 12, height: 10, rx: 2, class: "hook hook-" + st }));
      const text = st.replace(/_/g, " ");
      s.append(svg("text", { x: lx + 16, y: ly, class: "legend" }, text));
      lx += 30 + text.length * 6.5;
    }
  }
  function niceTicks(end, count) {
    const raw = end / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw) || raw;
    const out = [];
    for (let t = 0; t <= end + 1e-9; t += step) out.push(t);
    return out;
  }

  // ------------------------------------------------------------------ rendering
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderAll();
    });
  }
  function renderAll() {
    const p = (stats.renderParts = {});
    let t = performance.now();
    const lap = (k) => { const n = performance.now(); p[k] = n - t; t = n; };
    const root = model.root;
    if (root) {
      const health = rootHealth();
      if (health !== root.health) { root.health = health; root.v++; }
    }
    lap("root");
    renderTree();
    lap("tree");
    renderHeader();
    lap("header");
    renderDetail(false);
    lap("detail");
  }

  // ------------------------------------------------------------------ the stream
  function setConnection(state, text) {
    const c = $("connection");
    c.textContent = text;
    c.className = "conn conn-" + state;
    document.body.classList.toggle("offline", state !== "live");
  }
  function connect() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    setConnection("down", "connecting…");
    source = new EventSource(apiUrl("stream"));
    source.addEventListener("open", () => {
      setConnection("wait", "connected, waiting for the tree…");
    });
    source.addEventListener("snapshot", (msg) => {
      const t0 = performance.now();
      const data = JSON.parse(msg.data);
      const t1 = performance.now();
      setClock(data.now);
      loadSnapshot(data);
      const t2 = performance.now();
      marks.length = 0;
      addEvents(data.events || [], true);
      shutdownReport = data.shutdown || null;
      view.traceback.clear();
      const t3 = performance.now();
      renderAll();
      renderTimeline();
      renderGantt();
      void document.body.offsetHeight;   // laid out: on screen at the next paint
      const took = performance.now() - t0;
      stats.snapshotParts = { parse: t1 - t0, model: t2 - t1, events: t3 - t2, render: t0 + took - t3 };
      stats.snapshotMs = took;
      stats.snapshots++;
      if (stats.firstRenderMs === undefined) stats.firstRenderMs = performance.now();
      setConnection("live", "live");
      model.connected = true;
      loadInfo();
    });
    source.addEventListener("changes", (msg) => {
      const t0 = performance.now();
      const data = JSON.parse(msg.data);
      setClock(data.now);
      applyChanges(data);
      const t1 = performance.now();
      if (data.events && data.events.length) addEvents(data.events, false);
      const t2 = performance.now();
      renderAll();
      const took = performance.now() - t0;
      stats.lastUpdateParts = { parseApply: t1 - t0, events: t2 - t1, render: t0 + took - t2 };
      stats.lastUpdateMs = took;
      stats.maxUpdateMs = Math.max(stats.maxUpdateMs, took);
      stats.totalUpdateMs += took;
      stats.updates++;
    });
    source.addEventListener("shutdown", (msg) => {
      shutdownReport = JSON.parse(msg.data);
      renderGantt();
    });
    source.addEventListener("error", () => {
      model.connected = false;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error): try again ourselves.
        setConnection("down", "disconnected — reconnecting…");
        reconnectTimer = setTimeout(connect, 2000);
      } else {
        setConnection("down", "disconnected — reconnecting…");
      }
    });
  }
  async function loadInfo() {
    try {
      const r = await fetch(apiUrl("info"), { headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const info = await r.json();
      model.actions = !!info.actions;
      if (info.name) $("tree-name").textContent = info.name;
      document.title = (info.name ? info.name + " · " : "") + "trio-supervise observer";
    } catch (e) {
      return;
    }
    $("readonly").hidden = model.actions;
    $("token-label").hidden = !model.actions;
    document.body.classList.toggle("read-only", !model.actions);
    view.rowsDirty = true;
    scheduleRender();
  }

  // ------------------------------------------------------------------ actions
  let messageTimer = null;
  function showMessage(kind, text) {
    const m = $("message");
    $("message-text").textContent = text;
    m.className = "message msg-" + kind;
    m.hidden = false;
    clearTimeout(messageTimer);
    if (kind !== "error") messageTimer = setTimeout(() => { m.hidden = true; }, 6000);
  }
  async function act(action, path) {
    const token = $("token").value.trim();
    const what = action + " " + path;
    if (!token) {
      showMessage("error", what + ": enter the observer's token first (top right)");
      $("token").focus();
      return;
    }
    showMessage("pending", what + "…");
    let r, body;
    try {
      r = await fetch(childUrl(path, action), {
        method: "POST",
        headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      });
      body = await r.json().catch(() => ({}));
    } catch (e) {
      showMessage("error", what + " failed: " + e.message);
      return;
    }
    if (r.ok) {
      showMessage("ok", what + ": done, it is " + (body.state || "?"));
    } else {
      let text = body.error || ("HTTP " + r.status);
      if (r.status === 401) text = "the token was refused: " + text;
      showMessage("error", what + " refused (" + r.status + "): " + text);
      if (r.status === 401) $("token").focus();
    }
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    $("token-form").addEventListener("submit", (e) => e.preventDefault());
    const token = $("token");
    try { token.value = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* storage off */ }
    token.addEventListener("input", () => {
      try { sessionStorage.setItem(TOKEN_KEY, token.value); } catch (e) { /* storage off */ }
    });
    for (const id of ["filter", "state-filter", "health-filter", "errors-only"]) {
      $(id).addEventListener(id === "filter" ? "input" : "change", () => {
        $("tree").scrollTop = 0;
        view.measure();
        scheduleRender();
      });
    }
    document.addEventListener("keydown", (e) => {
      if (e.key === "/" && document.activeElement !== $("filter") && !(e.target instanceof HTMLInputElement)) {
        e.preventDefault();
        $("filter").focus();
      } else if (e.key === "Escape" && document.activeElement === $("filter")) {
        $("filter").value = "";
        scheduleRender();
      }
    });
    const measure = () => {
      const box = $("tree");
      view.scrollTop = box.scrollTop;
      view.height = box.clientHeight;
    };
    view.measure = measure;
    measure();
    $("tree").addEventListener("scroll", () => { measure(); renderTree(); }, { passive: true });
    $("tree").addEventListener("click", (e) => {
      const row = e.target.closest(".row");
      if (!row || !row._node) return;
      const n = row._node;
      const button = e.target.closest("button");
      if (button && button.dataset.action) {
        act(button.dataset.action, n.path);
        return;
      }
      if (button && button.classList.contains("toggle")) {
        const set = view.filterActive ? view.filterCollapsed : view.collapsed;
        if (set.has(n.path)) set.delete(n.path); else set.add(n.path);
        view.structureDirty = true;
        scheduleRender();
        return;
      }
      select(n.path);
      if (e.target.classList.contains("err") && n.last_error) loadTraceback(n.path);
    });
    $("tree").addEventListener("keydown", (e) => {
      if (!["ArrowDown", "ArrowUp", "ArrowLeft", "ArrowRight"].includes(e.key)) return;
      const vis = view.visible;
      let i = vis.findIndex((n) => n.path === view.selected);
      const n = vis[i];
      if (e.key === "ArrowDown") i = Math.min(vis.length - 1, i + 1);
      else if (e.key === "ArrowUp") i = Math.max(0, i - 1);
      else if (n && n.children.length) {
        const set = view.filterActive ? view.filterCollapsed : view.collapsed;
        if (e.key === "ArrowLeft") set.add(n.path); else set.delete(n.path);
        view.structureDirty = true;
      }
      e.preventDefault();
      if (vis[i]) {
        view.selected = vis[i].path;
        const box = $("tree");
        if (i * ROW_H < box.scrollTop) box.scrollTop = i * ROW_H;
        else if ((i + 1) * ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = (i + 1) * ROW_H - box.clientHeight;
      }
      view.rowsDirty = true;
      scheduleRender();
    });
    $("detail").addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      if (b.dataset.action && b.dataset.target !== undefined) act(b.dataset.action, b.dataset.target);
      else if (b.dataset.traceback !== undefined) loadTraceback(b.dataset.traceback);
    });
    const selectFrom = (e) => {
      const t = e.target.closest("[data-select]");
      if (!t) return;
      const path = t.dataset.select !== undefined ? t.dataset.select : t.getAttribute("data-select");
      if (!model.nodes.has(path)) return;
      revealPath(path);
    };
    $("events").addEventListener("click", selectFrom);
    $("timeline").addEventListener("click", selectFrom);
    $("summary").addEventListener("click", (e) => {
      const chip = e.target.closest(".chip");
      if (!chip) return;
      if (chip.dataset.state) $("state-filter").value = $("state-filter").value === chip.dataset.state ? "" : chip.dataset.state;
      if (chip.dataset.health) $("health-filter").value = $("health-filter").value === chip.dataset.health ? "" : chip.dataset.health;
      $("tree").scrollTop = 0;
        view.measure();
      scheduleRender();
    });
    $("expand-all").addEventListener("click", () => {
      (view.filterActive ? view.filterCollapsed : view.collapsed).clear();
      view.structureDirty = true;
      scheduleRender();
    });
    $("collapse-all").addEventListener("click", () => {
      const set = view.filterActive ? view.filterCollapsed : view.collapsed;
      for (const n of model.nodes.values()) if (n.children.length && n !== model.root) set.add(n.path);
      view.structureDirty = true;
      scheduleRender();
    });
    $("timeline-window").addEventListener("click", (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      view.timelineWindow = Number(b.dataset.window);
      for (const o of $("timeline-window").children) o.classList.toggle("on", o === b);
      renderTimeline();
    });
    $("message-close").addEventListener("click", () => { $("message").hidden = true; });
    if (window.ResizeObserver) {
      new ResizeObserver(() => { renderTimeline(); renderGantt(); }).observe($("timeline-box"));
      new ResizeObserver(() => { measure(); renderTree(); }).observe($("tree"));
    }
    // Countdowns every 200 ms; the timeline slides every second.
    setInterval(() => {
      updateBackoffs();
      updateDetailTimes(view.selected !== null ? model.nodes.get(view.selected) : null);
    }, 200);
    setInterval(() => { if (model.root) renderTimeline(); }, 1000);
    renderTimeline();
    renderGantt();
    connect();
  }
  function revealPath(path) {
    // Show a child: expand its supervisors, scroll to it and select it.
    let p = parentPath(path);
    const set = view.filterActive ? view.filterCollapsed : view.collapsed;
    while (true) {
      set.delete(p);
      if (p === "") break;
      p = parentPath(p);
    }
    view.structureDirty = true;
    view.selected = path;
    readFilter();
    computeVisible();
    const i = view.visible.findIndex((n) => n.path === path);
    if (i >= 0) {
      const box = $("tree");
      if (i * ROW_H < box.scrollTop || (i + 1) * ROW_H > box.scrollTop + box.clientHeight) {
        box.scrollTop = Math.max(0, i * ROW_H - box.clientHeight / 2);
      }
    }
    scheduleRender();
  }

  // Expose for tests and benchmarks.
  window.observer = { model, view, revealPath, serverNow, render: () => renderAll() };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
