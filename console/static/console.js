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
