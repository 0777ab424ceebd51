// The dashboard's live parts: plain JavaScript, served by qbo-pipeline itself (no CDN, no
// build). Each element with data-live names the JSON it is refreshed from.
"use strict";

function text(el, value) {
  if (el && el.textContent !== String(value)) el.textContent = String(value);
}
function rate(v) { return v.toFixed(1) + "/s"; }
function eta(v) {
  if (v === null || v === undefined) return "—";
  if (v < 90) return Math.round(v) + " s";
  if (v < 5400) return Math.round(v / 60) + " min";
  return (v / 3600).toFixed(1) + " h";
}
async function getJson(url) {
  const answer = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (answer.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); throw new Error("signed out"); }
  if (!answer.ok) throw new Error(url + ": HTTP " + answer.status);
  return answer.json();
}
function every(ms, fn) {
  let busy = false;
  const tick = async () => { if (busy) return; busy = true; try { await fn(); } catch (e) { console.warn(e); } finally { busy = false; } };
  tick();
  return setInterval(tick, ms);
}

// Overview: runs in flight.
function liveRuns(section) {
  const table = section.querySelector("table.live");
  const tbody = table.querySelector("tbody");
  const empty = section.querySelector("p.empty");
  every(1000, async () => {
    const runs = await getJson(section.dataset.live);
    table.hidden = runs.length === 0;
    empty.hidden = runs.length !== 0;
    const seen = new Set();
    for (const r of runs) {
      seen.add(String(r.run_id));
      let row = tbody.querySelector('tr[data-run="' + r.run_id + '"]');
      if (!row) {
        row = document.createElement("tr");
        row.dataset.run = r.run_id;
        for (const c of ["id", "pipeline", "realm", "entities", "pages", "records", "rate", "eta"]) {
          const td = document.createElement("td"); td.className = c; row.appendChild(td);
        }
        const link = document.createElement("a");
        link.href = "/runs/" + r.run_id; link.textContent = "#" + r.run_id;
        row.querySelector("td.id").appendChild(link);
        text(row.querySelector("td.pipeline"), r.pipeline);
        text(row.querySelector("td.realm"), r.realm_id);
        tbody.appendChild(row);
      }
      text(row.querySelector("td.entities"), r.entities_done + "/" + r.entities);
      text(row.querySelector("td.pages"), r.pages);
      text(row.querySelector("td.records"), r.records);
      text(row.querySelector("td.rate"), rate(r.records_per_sec));
      text(row.querySelector("td.eta"), eta(r.eta_secs));
    }
    for (const row of Array.from(tbody.querySelectorAll("tr[data-run]"))) {
      if (!seen.has(row.dataset.run)) row.remove();
    }
  });
}

// Run page: while running, its status and entity figures; reloaded once it ends.
function liveRun(status) {
  if (status.textContent.trim() !== "running") return;
  const timer = every(1000, async () => {
    const detail = await getJson(status.dataset.live);
    text(status, detail.run.status);
    status.className = "status " + detail.run.status;
    for (const e of detail.entities) {
      const row = document.querySelector('#run-entities tr[data-entity="' + e.entity + '"]');
      if (row) { text(row.querySelector("td.pages"), e.pages); text(row.querySelector("td.records"), e.records); }
    }
    if (detail.run.status !== "running") { clearInterval(timer); setTimeout(() => location.reload(), 300); }
  });
}

// Triggers: next fire, last run and outcome.
function liveTriggers(table) {
  every(2000, async () => {
    for (const t of await getJson(table.dataset.live)) {
      const row = table.querySelector('tr[data-trigger="' + CSS.escape(t.name) + '"]');
      if (!row) continue;
      text(row.querySelector("td.next-fire"), t.next_fire_at || "—");
      const outcome = row.querySelector("td.last-outcome .status");
      text(outcome, t.last_outcome || "");
      outcome.className = "status " + (t.last_outcome || "");
      text(row.querySelector("td.last-outcome .error-text"), t.last_error || "");
      const last = row.querySelector("td.last-run");
      if (t.last_run_id && !last.querySelector('a[href="/runs/' + t.last_run_id + '"]')) {
        last.textContent = "";
        const a = document.createElement("a");
        a.href = "/runs/" + t.last_run_id; a.textContent = "#" + t.last_run_id;
        last.appendChild(a);
      }
    }
  });
}

// API usage: the live figures of each company.
function liveUsage(table) {
  every(2000, async () => {
    for (const u of await getJson(table.dataset.live)) {
      const row = table.querySelector('tr[data-realm="' + CSS.escape(u.realm_id) + '"]');
      if (!row) continue;
      text(row.querySelector("td.rpm"), u.requests_last_minute + " / " + u.requests_per_minute_limit);
      text(row.querySelector("td.in-flight"), u.in_flight + " / " + u.max_in_flight);
      text(row.querySelector("td.throttled"), u.throttled_last_minute + " / " + u.throttled_this_month);
      text(row.querySelector("td.today"), u.calls_today);
      text(row.querySelector("td.month"), u.calls_this_month);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("section#live[data-live]");
  if (live) liveRuns(live);
  const status = document.querySelector("#run-status[data-live]");
  if (status) liveRun(status);
  const triggers = document.querySelector("table#triggers[data-live]");
  if (triggers) liveTriggers(triggers);
  const usage = document.querySelector("table#usage[data-live]");
  if (usage) liveUsage(usage);
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => { if (!window.confirm(form.dataset.confirm)) event.preventDefault(); });
  }
  const hide = document.querySelector("#hide-empty");
  if (hide) {
    const apply = () => { for (const row of document.querySelectorAll('#overview tr[data-state="never"]')) row.hidden = hide.checked; };
    hide.addEventListener("change", apply);
    apply();
  }
});
