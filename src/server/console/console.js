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
  function showFlame(kind, r, svg) {
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
    status(kind.toUpperCase() + ' flamegraph ' + svgName + ': Ctrl-F inside it searches, a click zooms.');
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

  // The figures: this page again, its #figures and #kept swapped in.
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
    } catch (e) {
      /* the next tick tries again */
    } finally {
      refreshing = false;
    }
  }
  setInterval(refresh, 10000);
  document.documentElement.dataset.ready = '1';
})();
