// The prodbg console. Every action calls the same guarded, audited endpoint as curl would;
// this script only wires the forms to fetch() and shows the answers. No framework, no other
// origin: the page's CSP allows scripts and requests to this origin only.
'use strict';
(function () {
  const here = new URL(location.href);
  const base = new URL(document.baseURI);
  // A page opened as http://user:secret@host/debug/ keeps the credentials in its base URL,
  // and fetch() refuses a URL with credentials (relative ones inherit them). location.href
  // has none: load the page once more from it; the browser's auth cache then sends Basic
  // with every request, and no request goes out without it first.
  if ((base.username || base.password) && !here.username && !here.password) {
    location.replace(location.href);
    return;
  }
  const root = new URL('.', here);
  root.username = '';
  root.password = '';
  root.hash = '';
  const api = (path) => new URL(path, root).href;
  const $ = (id) => document.getElementById(id);

  let ticking = null;
  function status(text, bad) {
    const s = $('status');
    s.textContent = text;
    s.className = bad ? 'bad' : '';
  }

  function busy(button, on) {
    for (const b of document.querySelectorAll('#actions button')) {
      if (on) {
        b.dataset.wasDisabled = b.disabled ? '1' : '';
        b.disabled = true;
      } else {
        b.disabled = b.dataset.wasDisabled === '1';
      }
    }
    if (button) button.classList.toggle('running', on);
  }

  // fetch() with the error body ({"error","message"}) shown in the status line.
  async function call(what, path, options, button) {
    const started = Date.now();
    status(what + '…');
    clearInterval(ticking);
    ticking = setInterval(() => {
      status(what + '… ' + Math.round((Date.now() - started) / 1000) + ' s');
    }, 1000);
    busy(button, true);
    try {
      const r = await fetch(api(path), Object.assign({ credentials: 'same-origin', cache: 'no-store' }, options || {}));
      if (!r.ok) {
        let message = r.statusText;
        try {
          const j = await r.json();
          message = j.error + ': ' + j.message;
        } catch (e) { /* not JSON */ }
        status(what + ' failed: HTTP ' + r.status + ' ' + message, true);
        return null;
      }
      return r;
    } catch (e) {
      status(what + ' failed: ' + e, true);
      return null;
    } finally {
      clearInterval(ticking);
      busy(button, false);
    }
  }

  function filename(r, fallback) {
    const d = r.headers.get('content-disposition') || '';
    const m = /filename="([^"]+)"/.exec(d);
    return m ? m[1] : fallback;
  }

  function showText(text) {
    $('flame').hidden = true;
    $('links').replaceChildren();
    const pre = $('text');
    pre.textContent = text;
    pre.hidden = false;
    $('result').scrollIntoView({ block: 'start' });
  }

  function link(href, text, download) {
    const a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    if (download) a.setAttribute('download', '');
    else a.target = '_blank';
    return a;
  }

  // The SVG was kept by the server (with the pprof file of the same profile): frame it from
  // there, under its own CSP, so inferno's search (Ctrl-F) and click-to-zoom work.
  function showFlame(kind, r, svg, what) {
    const svgName = filename(r, kind + '.svg');
    const pprofName = svgName.replace(/\.svg$/, '.pb.gz');
    $('text').hidden = true;
    const frame = $('flame');
    // The frame is as tall as the flamegraph (its roots are at the bottom), and scrolled to
    // its bottom once loaded. (CSSOM, not a style attribute: the CSP allows it.)
    const height = /<svg[^>]*\sheight="(\d+)"/.exec(svg);
    frame.style.height = height ? (Number(height[1]) + 8) + 'px' : '';
    frame.addEventListener('load', () => frame.scrollIntoView({ block: 'end' }), { once: true });
    frame.hidden = false;
    frame.src = api('console/last/' + kind + '.svg');
    $('links').replaceChildren(
      link(api('console/last/' + kind + '.pb.gz'), 'download ' + pprofName + ' (pprof)', true),
      document.createTextNode(' · '),
      link(api('console/last/' + kind + '.svg'), 'open ' + svgName, false),
    );
    status((what ? what + ', ' : kind.toUpperCase() + ' flamegraph ') + svgName + ': Ctrl-F inside it searches, a click zooms.');
    refresh(true);
  }

  // `{a.b}` in a status template, from the JSON answer.
  function fill(template, json) {
    return template.replace(/\{([\w.]+)\}/g, (_, path) => {
      let v = json;
      for (const k of path.split('.')) v = v == null ? v : v[k];
      return v == null ? '—' : String(v);
    });
  }

  // Every form runs the route it names (data-method, data-path) with its fields as query
  // parameters (data-body: the one sent as the body), and shows the answer as data-show says:
  // a kept flamegraph, text, or a status line filled from the JSON answer (data-done).
  for (const form of document.querySelectorAll('form.action')) {
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const button = e.submitter;
      const d = form.dataset;
      const query = new URLSearchParams();
      let body;
      for (const el of form.elements) {
        if (!el.name) continue;
        const v = el.value.trim();
        if (el.name === d.body) body = v;
        else if (v !== '') query.set(el.name, v);
      }
      const qs = query.toString();
      const path = d.path + (qs ? '?' + qs : '');
      const what = button ? button.textContent : d.path;
      const options = { method: d.method };
      if (body !== undefined) options.body = body;
      const r = await call(what, path, options, button);
      if (!r) return;
      if (d.show.startsWith('flame:')) {
        showFlame(d.show.slice(6), r, await r.text());
      } else if (d.show === 'text') {
        showText(await r.text());
        status(what + ': done.');
      } else {
        status(fill(d.done || (what + ': done.'), await r.json()));
        refresh(true);
      }
    });
  }

  // The timeline: a small line chart per vital sign over the last 10 minutes (all charts on
  // one time axis, from the oldest point). Dragging across a chart selects a window and shows
  // the CPU flamegraph of it, from the flight recorder's history.
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CHARTED = /^(cpu|rss_bytes|jemalloc_allocated_bytes|spans_in_flight|errors|admin_requests|tokio\..+\.busy_ratio)$/;
  const W = 300, H = 60; // the plot's viewBox; CSS sizes it
  let drag = null; // { svg, rect, from, to, x0, x1 } while the mouse is down on a chart
  let selected = null; // [t1, t2] of the last window asked for, shaded on every chart

  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function span(className, text) {
    const s = document.createElement('span');
    s.className = className;
    s.textContent = text;
    return s;
  }

  function formatValue(v, unit) {
    if (unit === 'bytes') {
      const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
      return v.toFixed(i ? 1 : 0) + ' ' + units[i];
    }
    if (unit === 'ratio') return (v * 100).toFixed(0) + ' %';
    if (unit === 'cores' || unit === 'per_second') return v.toFixed(v < 10 ? 2 : 0);
    return v.toFixed(0);
  }

  // The rectangle over [t1, t2] of a chart spanning [from, to].
  function place(rect, from, to, t1, t2) {
    const x = (t) => Math.min(W, Math.max(0, (t - from) / (to - from) * W));
    rect.setAttribute('x', x(t1));
    rect.setAttribute('width', x(t2) - x(t1));
  }

  function chart(series, from, to, step) {
    const fig = document.createElement('figure');
    fig.className = 'chart';
    fig.dataset.series = series.name;
    fig.dataset.points = series.points.length;
    const last = series.points[series.points.length - 1][1];
    const caption = document.createElement('figcaption');
    caption.append(span('name', series.name), span('unit', series.unit), span('last', formatValue(last, series.unit)));
    const max = Math.max(series.unit === 'ratio' ? 1 : 1e-9, ...series.points.map((p) => p[1]));
    let d = '', prev = null;
    for (const [t, v] of series.points) {
      // A missing second is a gap in the line.
      d += (prev === null || t - prev > 1500 * step ? 'M' : 'L') +
        ((t - from) / (to - from) * W).toFixed(1) + ',' + (H - 2 - v / max * (H - 4)).toFixed(1);
      prev = t;
    }
    const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', class: 'plot' });
    const rect = svgEl('rect', { class: 'selection', x: 0, y: 0, width: 0, height: H });
    if (selected) place(rect, from, to, selected[0], selected[1]);
    svg.append(svgEl('path', { class: 'line', d }), rect);
    svg.addEventListener('mousedown', (e) => {
      e.preventDefault();
      const x = fraction(svg, e);
      drag = { svg, rect, from, to, x0: x, x1: x };
      paint(drag);
    });
    fig.append(caption, svg);
    return fig;
  }

  // Where the mouse is across a chart, 0..1.
  function fraction(svg, e) {
    const r = svg.getBoundingClientRect();
    return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  }

  function dragged(d) {
    const at = (x) => d.from + x * (d.to - d.from);
    return [at(Math.min(d.x0, d.x1)), at(Math.max(d.x0, d.x1))];
  }

  function paint(d) {
    const [t1, t2] = dragged(d);
    place(d.rect, d.from, d.to, t1, t2);
  }

  window.addEventListener('mousemove', (e) => {
    if (!drag) return;
    drag.x1 = fraction(drag.svg, e);
    paint(drag);
  });
  window.addEventListener('mouseup', (e) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    d.x1 = fraction(d.svg, e);
    paint(d);
    if (d.x0 !== d.x1) flameOf(...dragged(d));
  });

  // The CPU flamegraph of [t1, t2] (unix ms), as "time ago" in whole seconds: at least 1 s
  // long, at most the recorder's default 10 minutes back, no until when t2 is about now.
  async function flameOf(t1, t2) {
    const now = Date.now();
    let until = Math.floor((now - t2) / 1000);
    if (until < 1) until = 0;
    const since = Math.min(600, Math.max(Math.ceil((now - t1) / 1000), until + 1));
    until = Math.min(until, since - 1);
    selected = [now - since * 1000, now - until * 1000];
    const what = 'CPU flamegraph of ' + since + ' s ago to ' + (until ? until + ' s ago' : 'now');
    const r = await call(what, 'pprof/profile?since=' + since + 's' + (until ? '&until=' + until + 's' : '') + '&format=svg');
    if (!r) return;
    showFlame('cpu', r, await r.text(), what);
  }

  // The charts, drawn again (not while a window is being dragged).
  async function timeline() {
    const r = await fetch(api('timeline?since=10m'), { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok || drag) return;
    const w = await r.json();
    const shown = w.series.filter((s) => CHARTED.test(s.name) && s.points.length > 0);
    const to = w.end_ms;
    const from = Math.min(to - 10000, ...shown.map((s) => s.points[0][0]));
    $('charts').replaceChildren(...shown.map((s) => chart(s, from, to, w.step_s)));
  }

  // The figures: this page again, its #figures and #kept swapped in; and the charts.
  let refreshing = false;
  async function refresh(force) {
    if (refreshing || (!force && (!$('auto-refresh').checked || document.hidden))) return;
    refreshing = true;
    try {
      const r = await fetch(api('./'), { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
      for (const id of ['figures', 'kept']) {
        const fresh = doc.getElementById(id);
        const old = $(id);
        if (fresh && old) old.replaceWith(document.importNode(fresh, true));
      }
      await timeline();
    } catch (e) {
      /* the next tick tries again */
    } finally {
      refreshing = false;
    }
  }
  setInterval(refresh, 10000);
  timeline().catch(() => { /* the next tick tries again */ });
  document.documentElement.dataset.ready = '1';
})();
