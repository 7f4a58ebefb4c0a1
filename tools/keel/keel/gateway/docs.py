"""`/docs`: a self-contained page that lists the operations of `/openapi.json` (no CDN needed)."""

DOCS_PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>API docs</title>
<style>
body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.6rem .8rem}
.verb{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6} .post{color:#06c} .put,.patch{color:#c70} .delete{color:#c22}
code{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}
pre{background:#f8f8f8;padding:.6rem;overflow:auto}
.lock{color:#888;font-size:.85rem}
</style></head><body>
<h1>API</h1>
<p>From <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1), generated from the protos.</p>
<div id="ops">Loading...</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const byTag = {};
  for (const [path, ops] of Object.entries(doc.paths || {}))
    for (const [verb, op] of Object.entries(ops))
      (byTag[(op.tags || ['api'])[0]] ||= []).push([verb, path, op]);
  const root = document.getElementById('ops'); root.textContent = '';
  for (const [tag, ops] of Object.entries(byTag)) {
    const h = document.createElement('h2'); h.textContent = tag; root.appendChild(h);
    for (const [verb, path, op] of ops) {
      const d = document.createElement('details'); d.className = 'op';
      const s = document.createElement('summary');
      const v = document.createElement('span'); v.className = 'verb ' + verb; v.textContent = verb;
      const c = document.createElement('code'); c.textContent = path;
      const t = document.createElement('span'); t.textContent = ' ' + (op.summary || '');
      s.append(v, c, t);
      if ((op.security || []).length) { const l = document.createElement('span');
        l.className = 'lock'; l.textContent = ' (auth)'; s.appendChild(l); }
      const p = document.createElement('pre'); p.textContent = JSON.stringify(op, null, 2);
      d.append(s, p); root.appendChild(d);
    }
  }
});
</script></body></html>
"""
