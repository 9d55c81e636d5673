// tapwatch console: keyboard triage in the episode lists (EveBox's keys) and auto-refresh. No framework.
(function () {
  "use strict";
  const form = document.getElementById("triage");
  if (!form) { return; }
  const rows = Array.from(form.querySelectorAll("tr.episode"));
  let cursor = rows.length ? 0 : -1;

  function show() {
    rows.forEach((r, i) => r.classList.toggle("cursor", i === cursor));
    if (cursor >= 0) { rows[cursor].scrollIntoView({ block: "nearest" }); }
  }
  function selected() { return rows.filter((r) => r.querySelector("input[type=checkbox]").checked); }
  function act(action) {
    if (cursor < 0) { return; }
    if (!selected().length) { rows[cursor].querySelector("input[type=checkbox]").checked = true; }
    const button = form.querySelector("button[name=action][value=" + action + "]");
    if (button) { button.click(); }
  }

  document.addEventListener("keydown", (ev) => {
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (ev.key === "j" && cursor < rows.length - 1) { cursor += 1; show(); }
    else if (ev.key === "k" && cursor > 0) { cursor -= 1; show(); }
    else if (ev.key === "x" && cursor >= 0) {
      const box = rows[cursor].querySelector("input[type=checkbox]");
      box.checked = !box.checked;
    }
    else if (ev.key === "e") { act("archive"); }
    else if (ev.key === "s") { act("escalate"); }
    else if ((ev.key === "o" || ev.key === "Enter") && cursor >= 0) { window.location = rows[cursor].dataset.href; }
    else { return; }
    ev.preventDefault();
  });
  show();

  // Auto-refresh while the analyst has nothing selected (a reload would lose the selection).
  const every = parseInt(form.dataset.refresh || "0", 10);
  if (every > 0) {
    setInterval(() => { if (!selected().length && document.visibilityState === "visible") { window.location.reload(); } }, every * 1000);
  }
})();

// A job's page: poll its status while it is queued or running; reload when it ends.
(function () {
  "use strict";
  const box = document.getElementById("job");
  if (!box || (box.dataset.status !== "queued" && box.dataset.status !== "running")) { return; }
  const bar = document.getElementById("job-progress");
  const said = document.getElementById("job-status");
  const timer = setInterval(() => {
    fetch(box.dataset.statusUrl, { credentials: "same-origin" }).then((r) => r.json()).then((job) => {
      bar.value = job.progress;
      said.textContent = job.status;
      if (job.status !== "queued" && job.status !== "running") { clearInterval(timer); window.location.reload(); }
    }).catch(() => {});
  }, 1500);
})();

// The live page: prepend each alert line the server sends (text only: no HTML from the data is ever parsed).
(function () {
  "use strict";
  const table = document.getElementById("live");
  if (!table || !window.EventSource) { return; }
  const body = table.querySelector("tbody");
  const state = document.getElementById("live-state");
  const source = new EventSource(table.dataset.events);
  source.onopen = () => { state.textContent = "connected"; };
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("alert", (ev) => {
    const r = JSON.parse(ev.data);
    const tr = document.createElement("tr");
    tr.className = "new";
    const when = new Date(r.at_ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
    const cells = [when, r.state, null, r.host, String(r.flows ?? ""), r.sensor, r.summary];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 2) {
        const a = document.createElement("a");
        a.href = table.dataset.episode.replace("EPISODE", encodeURIComponent(r.episode));
        a.textContent = r.signature;
        td.appendChild(a);
      } else { td.textContent = text; }
      tr.appendChild(td);
    });
    body.insertBefore(tr, body.firstChild);
  });
})();
