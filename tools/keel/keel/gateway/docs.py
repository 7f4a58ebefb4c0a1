"""`/docs`: the API explorer page, three tabs over the documents the server serves.

API: Swagger UI on `/openapi.json`, its "Try it out" calling the server that serves the page
(the gateway, or a service's own REST port), with a bearer token from "Authorize". Events: the
AsyncAPI React component on `/asyncapi.json`. System: the Mermaid diagram of the services and
their events (keel.gateway.diagram). The browser files come from the keel package
(keel.gateway.assets), never from a CDN; Events and System load theirs when first opened.
"""

from __future__ import annotations

import html
import json

from keel.gateway.assets import url

_SWAGGER = "swagger-ui-dist"
_ASYNCAPI = "@asyncapi/react-component"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{swagger_css}">
<style>
body{{margin:0;font:15px system-ui,sans-serif;color:#222}}
header{{display:flex;gap:1rem;align-items:center;padding:.4rem 1.2rem;
  border-bottom:1px solid #ddd;position:sticky;top:0;background:#fff;z-index:10}}
header h1{{font-size:1.1rem;margin:0 1rem 0 0}}
#tabs [role=tab]{{border:0;background:none;padding:.6rem .8rem;font:inherit;cursor:pointer;
  border-bottom:3px solid transparent}}
#tabs [role=tab][aria-selected=true]{{border-bottom-color:#49cc90;font-weight:600}}
header .sources{{margin-left:auto;font-size:.85rem}} header a{{color:#555}}
body>section{{padding:0 1rem}} #system-diagram,#asyncapi{{padding:1rem 0;overflow:auto}}
</style></head><body>
<header><h1>{title}</h1><nav id="tabs" role="tablist">
<button role="tab" id="tab-api" aria-controls="api">API</button>
<button role="tab" id="tab-events" aria-controls="events">Events</button>
<button role="tab" id="tab-system" aria-controls="system">System</button></nav>
<span class="sources"><a href="openapi.json">openapi.json</a> ·
<a href="asyncapi.json">asyncapi.json</a></span></header>
<section id="api" role="tabpanel"><div id="swagger"></div></section>
<section id="events" role="tabpanel" hidden><div id="asyncapi"></div></section>
<section id="system" role="tabpanel" hidden>
<p>{system_note}</p><div id="system-diagram"></div>
<pre id="system-source" hidden>{diagram}</pre></section>
<script src="{swagger_js}"></script>
<script>
const ASSETS = {assets};
const load = src => new Promise((done, failed) => {{
  const script = document.createElement('script');
  script.src = src; script.onload = done; script.onerror = failed;
  document.head.appendChild(script);
}});
const failed = (id, error) => {{ document.getElementById(id).textContent = String(error); }};
const RENDER = {{
  api() {{
    SwaggerUIBundle({{url: 'openapi.json', dom_id: '#swagger', persistAuthorization: true}});
  }},
  async events() {{
    const doc = await (await fetch('asyncapi.json')).json();
    const root = document.getElementById('asyncapi');
    if (!Object.keys(doc.channels || {{}}).length) {{
      root.textContent = 'No events: nothing here publishes or subscribes to one.';
      return;
    }}
    const style = document.createElement('link');
    style.rel = 'stylesheet'; style.href = ASSETS.asyncapiCss; document.head.appendChild(style);
    await load(ASSETS.asyncapiJs);
    AsyncApiStandalone.render({{schema: doc, config: {{show: {{sidebar: false}}}}}}, root);
  }},
  async system() {{
    await load(ASSETS.mermaidJs);
    mermaid.initialize({{startOnLoad: false}});
    const source = document.getElementById('system-source').textContent;
    const {{svg}} = await mermaid.render('system-svg', source);
    document.getElementById('system-diagram').innerHTML = svg;
  }},
}};
const shown = new Set();
function show(name) {{
  for (const tab of document.querySelectorAll('#tabs [role=tab]')) {{
    const panel = tab.getAttribute('aria-controls');
    tab.setAttribute('aria-selected', String(panel === name));
    document.getElementById(panel).hidden = panel !== name;
  }}
  if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  if (!shown.has(name)) {{
    shown.add(name);
    Promise.resolve().then(RENDER[name]).catch(error => failed(name, error));
  }}
}}
for (const tab of document.querySelectorAll('#tabs [role=tab]'))
  tab.addEventListener('click', () => show(tab.getAttribute('aria-controls')));
show(location.hash.slice(1) in RENDER ? location.hash.slice(1) : 'api');
</script></body></html>
"""

_SYSTEM_NOTES = {
    "graph": (
        "The system as <code>keel graph</code> draws it from the protos and each service's code "
        "(<code>make gen</code>; docs/architecture.md): solid arrows are gRPC calls through "
        "generated clients, labelled with the rpcs the caller uses; dotted arrows are events, "
        "from the publisher to each subscriber. {own}"
    ),
    "documents": (
        "The services and the events between them, read from openapi.json and asyncapi.json: a "
        "dotted arrow goes from an event's publisher to each subscriber. {own}The calls between "
        "services are drawn by <code>keel graph</code> (docs/architecture.md), which reads each "
        "service's code; <code>make gen</code> writes its diagram next to the generated code "
        "(system.mmd) for this page."
    ),
}


def page(title: str, diagram: str, own: str = "", drawn_from: str = "documents") -> bytes:
    """The `/docs` page: `diagram` is the System tab's Mermaid source, drawn by `keel graph`
    ("graph") or from the page's documents ("documents"); `own` names the services of the
    process serving it (drawn bold)."""
    assets = {
        "asyncapiJs": url(_ASYNCAPI, "index.js"),
        "asyncapiCss": url(_ASYNCAPI, "default.min.css"),
        "mermaidJs": url("mermaid", "mermaid.min.js"),
    }
    note = f"This page is served by {html.escape(own)} (in bold). " if own else ""
    return _PAGE.format(
        title=html.escape(title),
        swagger_css=url(_SWAGGER, "swagger-ui.css"),
        swagger_js=url(_SWAGGER, "swagger-ui-bundle.js"),
        assets=json.dumps(assets),
        system_note=_SYSTEM_NOTES[drawn_from].format(own=note),
        diagram=html.escape(diagram),
    ).encode()
