"""The dashboard's stylesheet and script: plain text served as they are, no build step."""

CSS = """
:root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ec; --bg:#f7f8fa; --accent:#3b5bdb; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:1.5rem; align-items:center; padding:.7rem 1.5rem; background:#1d2330; }
header a { color:#dfe4ee; text-decoration:none; font-weight:600; }
header .brand { color:#fff; font-size:1.1rem; }
main { padding:1.2rem 1.5rem; max-width:1200px; }
h1 { font-size:1.3rem; margin:.2rem 0 1rem; }
h2 { font-size:1.05rem; margin:1.4rem 0 .5rem; }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.45rem .7rem; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:600; font-size:.85rem; }
td.id a { font-family:ui-monospace, monospace; }
.filters { display:flex; flex-wrap:wrap; gap:.4rem; align-items:center; margin-bottom:.8rem; }
.filters a { padding:.2rem .6rem; border:1px solid var(--line); border-radius:1rem; background:#fff;
  color:var(--fg); text-decoration:none; font-size:.85rem; }
.filters a.on { background:var(--accent); color:#fff; border-color:var(--accent); }
.filters form { margin-left:auto; }
input, select, textarea, button { font:inherit; }
input[type=search] { padding:.3rem .5rem; width:18rem; }
button { padding:.3rem .8rem; border:1px solid var(--line); border-radius:.3rem; background:#fff;
  cursor:pointer; }
button:hover { border-color:var(--accent); }
.status { display:inline-block; padding:.05rem .5rem; border-radius:.8rem; font-size:.8rem; color:#fff; }
.s-completed { background:#2f9e44; } .s-failed { background:#e03131; } .s-running { background:#1971c2; }
.s-suspended { background:#f08c00; } .s-pending { background:#868e96; } .s-cancelled { background:#495057; }
.s-rolling_back, .s-compensating { background:#ae3ec9; }
.s-rolled_back, .s-compensated { background:#862e9c; }
.s-skipped { background:#adb5bd; }
.meta { display:grid; grid-template-columns:max-content 1fr; gap:.2rem 1rem; background:#fff;
  border:1px solid var(--line); padding:.8rem 1rem; }
.meta dt { color:var(--muted); } .meta dd { margin:0; }
.actions { display:flex; flex-wrap:wrap; gap:.6rem; align-items:center; margin:1rem 0; }
.timeline { background:#fff; border:1px solid var(--line); padding:.6rem 1rem; }
.tl-row { display:grid; grid-template-columns:11rem 1fr 14rem; gap:.8rem; align-items:center;
  padding:.25rem 0; }
.tl-name { font-family:ui-monospace, monospace; overflow:hidden; text-overflow:ellipsis; }
.tl-track { position:relative; height:1.2rem; background:#f1f3f5; border-radius:.2rem; }
.tl-bar { position:absolute; top:0; bottom:0; min-width:3px; border-radius:.2rem; }
.tl-bar.waiting { background:repeating-linear-gradient(45deg,#f08c00,#f08c00 6px,#ffd8a8 6px,#ffd8a8 12px); }
.tl-info { color:var(--muted); font-size:.82rem; }
.tl-error { grid-column:2 / 4; color:#c92a2a; font-size:.82rem; font-family:ui-monospace, monospace; }
.plan { display:flex; flex-wrap:wrap; gap:.3rem; align-items:center; }
.plan .node { padding:.3rem .7rem; border:2px solid var(--line); border-radius:.3rem; background:#fff;
  font-family:ui-monospace, monospace; font-size:.85rem; }
.plan .node.commit { border-style:double; border-width:4px; }
.plan .arrow { color:var(--muted); }
.plan .node.st-completed { border-color:#2f9e44; } .plan .node.st-failed { border-color:#e03131; }
.plan .node.st-suspended { border-color:#f08c00; } .plan .node.st-running { border-color:#1971c2; }
pre { background:#fff; border:1px solid var(--line); padding:.7rem; overflow:auto; max-height:20rem; }
#run-logs td { font-family:ui-monospace, monospace; font-size:.82rem; vertical-align:top; }
#run-logs .log-warning td { color:#e67700; } #run-logs .log-error td { color:#c92a2a; }
.muted { color:var(--muted); }
.notice { padding:.5rem .8rem; background:#fff3bf; border:1px solid #ffe066; margin-bottom:1rem; }
"""

JS = """
// Refresh the element marked data-live from the same URL every two seconds, and send the
// dashboard's buttons to the API. No framework: the server renders the HTML.
(function () {
  const live = document.querySelector("[data-live]");
  async function refresh() {
    if (!live || live.dataset.live !== "on") return;
    const url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    const answer = await fetch(url, { headers: { "accept": "text/html" } });
    if (answer.ok) {
      live.innerHTML = await answer.text();
      const state = live.querySelector("[data-live-state]");
      if (state) live.dataset.live = state.dataset.liveState;
    }
  }
  setInterval(() => { refresh().catch(() => {}); }, 2000);

  async function post(path, body) {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: body === undefined ? "" : JSON.stringify(body),
    });
    const note = document.getElementById("action-result");
    if (!answer.ok) {
      const problem = await answer.json().catch(() => ({ error: { message: answer.statusText } }));
      if (note) note.textContent = problem.error.message;
      return;
    }
    if (note) note.textContent = "";
    if (live) live.dataset.live = "on";
    await refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const run = button.dataset.run;
    const base = "/api/runs/" + encodeURIComponent(run);
    const action = button.dataset.action;
    if (action === "cancel") post(base + "/cancel", { reason: "cancelled from the dashboard" });
    if (action === "resume") post(base + "/resume");
    if (action === "retry") {
      const step = document.getElementById("retry-step").value;
      post(base + "/retry/" + encodeURIComponent(step));
    }
    if (action === "signal") {
      const name = document.getElementById("signal-name").value;
      const text = document.getElementById("signal-payload").value.trim();
      let payload = null;
      try { payload = text ? JSON.parse(text) : null; } catch (e) {
        document.getElementById("action-result").textContent = "the payload is not JSON: " + e.message;
        return;
      }
      post(base + "/signals/" + encodeURIComponent(name), payload);
    }
  });
})();
"""
