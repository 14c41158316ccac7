// The console's only script (served from /static, so the Content-Security-Policy can forbid inline scripts).
// Agent text is only ever put on the page with textContent, never as markup.
"use strict";

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function taskLink(id) {
  const a = document.createElement("a");
  a.href = "/tasks/" + encodeURIComponent(id);
  a.textContent = id.slice(0, 8);
  return a;
}

// Agents: fetch the table again every few seconds and swap it in (rendered and escaped by the server).
function refreshAgents() {
  const holder = document.getElementById("agents-live");
  if (!holder) return;
  setInterval(async () => {
    const open = new Set([...holder.querySelectorAll("details[open]")].map((d) => d.closest("tr").dataset.agent + "|" + d.querySelector("summary").textContent));
    try {
      const response = await fetch("/agents?fragment=1", { credentials: "same-origin" });
      if (!response.ok) return;
      const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
      const nodes = [...parsed.body.childNodes].map((node) => document.importNode(node, true));
      holder.replaceChildren(...nodes);
      holder.querySelectorAll("details").forEach((d) => {
        if (open.has(d.closest("tr").dataset.agent + "|" + d.querySelector("summary").textContent)) d.open = true;
      });
    } catch (error) {
      /* the next round tries again */
    }
  }, 3000);
}

// Task page: reload while the task runs (not while it waits for an answer being typed).
function followTask() {
  const facts = document.getElementById("task-facts");
  if (!facts || facts.dataset.terminal === "yes") return;
  if (facts.dataset.state === "input-required" || facts.dataset.state === "auth-required") return;
  setTimeout(() => window.location.reload(), 1500);
}

function readFile(input) {
  return new Promise((resolve, reject) => {
    const file = input.files && input.files[0];
    if (!file) return resolve(null);
    const reader = new FileReader();
    reader.onload = () => resolve({ name: file.name, mediaType: file.type || "application/octet-stream", base64: String(reader.result).split(",", 2)[1] || "" });
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function describe(event) {
  if (event.error) return ["error", event.error];
  if (event.task) return [event.task.status.state, "task " + event.task.id + " created"];
  if (event.statusUpdate) {
    const status = event.statusUpdate.status || {};
    const parts = (status.message && status.message.parts) || [];
    return [status.state, parts.filter((p) => "text" in p).map((p) => p.text).join(" ")];
  }
  if (event.artifactUpdate) {
    const artifact = event.artifactUpdate.artifact || {};
    const parts = artifact.parts || [];
    const text = parts.map((p) => ("text" in p ? p.text : JSON.stringify(p.data !== undefined ? p.data : p))).join(" ");
    return ["artifact", (artifact.name || "artifact") + ": " + text];
  }
  if (event.message) return ["message", (event.message.parts || []).filter((p) => "text" in p).map((p) => p.text).join(" ")];
  return ["event", JSON.stringify(event)];
}

// Send: post the message, then read the relayed SSE stream line by line.
function sendForm() {
  const form = document.getElementById("send-form");
  if (!form) return;
  const list = document.getElementById("send-events");
  const taskLine = document.getElementById("send-task");
  form.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    list.replaceChildren();
    taskLine.textContent = "sending…";
    const fields = new FormData(form);
    let body;
    try {
      body = {
        skill: fields.get("skill"),
        agent: fields.get("agent"),
        text: fields.get("text"),
        data: fields.get("data"),
        metadata: fields.get("metadata"),
        file: await readFile(document.getElementById("send-file")),
      };
    } catch (error) {
      taskLine.textContent = "could not read the file: " + error;
      return;
    }
    const response = await fetch("/api/send", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok || !response.body) {
      let message = response.statusText;
      try { message = (await response.json()).error || message; } catch (error) { /* not JSON */ }
      taskLine.textContent = "refused: " + message;
      return;
    }
    taskLine.textContent = "streaming…";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (let rounds = 0; rounds < 100000; rounds++) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (!data) continue;
        const event = JSON.parse(data);
        const id = (event.task && event.task.id) || (event.statusUpdate && event.statusUpdate.taskId) || (event.artifactUpdate && event.artifactUpdate.taskId);
        if (id && !taskLine.dataset.task) {
          taskLine.dataset.task = id;
          taskLine.replaceChildren(document.createTextNode("task "), taskLink(id));
          taskLine.lastChild.id = "send-task-link";
          taskLine.lastChild.textContent = id;
        }
        const [state, text] = describe(event);
        const item = document.createElement("li");
        item.className = "event";
        item.dataset.state = String(state || "");
        const label = document.createElement("strong");
        label.textContent = String(state || "").replace("TASK_STATE_", "").toLowerCase() + " ";
        const detail = document.createElement("span");
        detail.textContent = text || "";
        item.append(label, detail);
        list.appendChild(item);
      }
    }
    delete taskLine.dataset.task;
    taskLine.append(document.createTextNode(" — stream ended"));
  });
}

// Live: one EventSource on /api/live, reopened when the agent filter changes.
function liveFeed() {
  const body = document.getElementById("live-events");
  if (!body) return;
  const select = document.getElementById("live-agent");
  const status = document.getElementById("live-status");
  let source = null;
  const open = () => {
    if (source) source.close();
    body.replaceChildren();
    const query = select.value ? "?agent=" + encodeURIComponent(select.value) : "";
    source = new EventSource("/api/live" + query);
    source.onopen = () => { status.textContent = "live"; };
    source.onerror = () => { status.textContent = "reconnecting…"; };
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      const row = document.createElement("tr");
      row.className = "live-event";
      row.dataset.agent = event.agent;
      cell(row, event.timestamp);
      row.appendChild(document.createElement("td")).appendChild(taskLink(event.taskId));
      cell(row, event.state, "state " + event.state);
      cell(row, event.agent);
      cell(row, event.text);
      body.prepend(row);
      while (body.children.length > 500) body.lastChild.remove();
    };
  };
  select.addEventListener("change", open);
  open();
}

document.addEventListener("DOMContentLoaded", () => {
  refreshAgents();
  followTask();
  sendForm();
  liveFeed();
});
