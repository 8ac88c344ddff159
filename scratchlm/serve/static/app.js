// The scratchlm web page: plain JavaScript, no build step, no network but this server.
"use strict";

const $ = (id) => document.getElementById(id);
const TASK_LABELS = {
  generate: "Generate (stream)",
  chat: "Chat (stream)",
  classify: "Classify",
  translate: "Translate",
  summarize: "Summarize",
};
const EXAMPLES = {
  generate: "The movie was",
  chat: "Can you recommend a good film for tonight?",
  classify: "A wonderful, moving film with a great cast.",
  translate: "This is an example of machine translation.",
  summarize: "Paste a long text here to summarize it.",
};

let models = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  setStatus("Error", "error");
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function currentModel() {
  return models.find((m) => m.id === $("model").value);
}

function tasksOf(model) {
  if (!model) return [];
  const tasks = [];
  for (const t of model.tasks) {
    tasks.push(t);
    if (t === "generate") tasks.push("chat");
  }
  return tasks;
}

function fillTasks() {
  const select = $("task");
  const before = select.value;
  select.textContent = "";
  for (const t of tasksOf(currentModel())) {
    const option = document.createElement("option");
    option.value = t;
    option.textContent = TASK_LABELS[t] || t;
    select.appendChild(option);
  }
  if ([...select.options].some((o) => o.value === before)) select.value = before;
  taskChanged();
}

function taskChanged() {
  const task = $("task").value;
  const generative = task === "generate" || task === "chat";
  $("gen-options").hidden = !generative;
  $("seq2seq-options").hidden = !(task === "translate" || task === "summarize");
  const input = $("input");
  if (!input.value || Object.values(EXAMPLES).includes(input.value)) input.value = EXAMPLES[task] || "";
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    models = (await response.json()).data;
  } catch (e) {
    showError("Cannot list the models: " + e.message);
    return;
  }
  const select = $("model");
  const before = select.value;
  select.textContent = "";
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.id} (${m.task})`;
    select.appendChild(option);
  }
  if (models.some((m) => m.id === before)) select.value = before;
  $("error").hidden = true;
  fillTasks();
  setStatus(`${models.length} model${models.length === 1 ? "" : "s"} served. Ready.`, "idle");
}

async function checkHealth() {
  try {
    const response = await fetch("/health");
    const ok = response.ok;
    $("health").dataset.state = ok ? "ok" : "down";
    $("health").textContent = ok ? "server ok" : "server unavailable";
  } catch (e) {
    $("health").dataset.state = "down";
    $("health").textContent = "server unreachable";
  }
}

function clearOutput() {
  $("error").hidden = true;
  $("generated").hidden = true;
  $("classes").hidden = true;
  $("seq2seq-output").hidden = true;
  $("prompt-echo").textContent = "";
  $("completion").textContent = "";
  $("classes").textContent = "";
  $("seq2seq-output").textContent = "";
}

function numberOr(id, fallback) {
  const v = $(id).value;
  return v === "" ? fallback : Number(v);
}

// Server-sent events from a fetch() body: calls onEvent(json) per "data:" line, stops at [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function runGeneration(model, task, text) {
  const chat = task === "chat";
  const body = {
    model: model.id,
    max_tokens: numberOr("max-tokens", 64),
    temperature: numberOr("temperature", 0.8),
    top_p: numberOr("top-p", 1),
    stream: true,
    stream_options: { include_usage: true },
  };
  const seed = $("seed").value;
  if (seed !== "") body.seed = Number(seed);
  if (chat) body.messages = [{ role: "user", content: text }];
  else body.prompt = text;
  const t0 = performance.now();
  const response = await fetch(chat ? "/v1/chat/completions" : "/v1/completions", {
    method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  $("prompt-echo").textContent = chat ? "" : text;
  $("generated").hidden = false;
  let usage = null;
  let finish = null;
  await readEvents(response, (event) => {
    if (event.error) throw new Error(event.error.message);
    if (event.usage) usage = event.usage;
    for (const choice of event.choices || []) {
      const piece = chat ? (choice.delta && choice.delta.content) : choice.text;
      if (piece) $("completion").textContent += piece;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  });
  const seconds = (performance.now() - t0) / 1000;
  const tokens = usage ? usage.completion_tokens : 0;
  const why = finish === "length" ? "max tokens reached" : "stopped";
  setStatus(`Done: ${tokens} tokens in ${seconds.toFixed(2)} s (${(tokens / seconds).toFixed(1)} tokens/s), ${why}.`,
            "done");
}

async function runClassify(model, text) {
  const t0 = performance.now();
  const response = await fetch("/v1/classify", {
    method: "POST", headers: headers(), body: JSON.stringify({ model: model.id, input: text }),
    signal: controller.signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  const result = (await response.json()).data[0];
  const list = $("classes");
  const entries = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const row = document.createElement("li");
    row.className = "class-row" + (label === result.label ? " top" : "");
    row.dataset.label = label;
    row.dataset.probability = String(p);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-label", label);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(p));
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * p).toFixed(1) + "%";
    row.append(name, bar, pct);
    list.appendChild(row);
  }
  list.hidden = false;
  const seconds = (performance.now() - t0) / 1000;
  setStatus(`Done: ${result.label} (${(100 * result.probability).toFixed(1)}%) in ${seconds.toFixed(2)} s.`, "done");
}

async function runSeq2seq(model, task, text) {
  const t0 = performance.now();
  const body = { model: model.id, input: text, num_beams: numberOr("beams", 4) };
  const maxTokens = $("s2s-max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  const response = await fetch("/v1/" + task, {
    method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
  });
  if (!response.ok) throw new Error(await errorMessage(response));
  const result = await response.json();
  $("seq2seq-output").textContent = result.data[0].text;
  $("seq2seq-output").hidden = false;
  const seconds = (performance.now() - t0) / 1000;
  setStatus(`Done in ${seconds.toFixed(2)} s.`, "done");
}

async function run() {
  const model = currentModel();
  const task = $("task").value;
  const text = $("input").value;
  if (!model) return showError("No model is selected.");
  if (!text.trim()) return showError("Type some text first.");
  clearOutput();
  controller = new AbortController();
  $("run").disabled = true;
  $("stop").disabled = false;
  setStatus("Running…", "running");
  try {
    if (task === "generate" || task === "chat") await runGeneration(model, task, text);
    else if (task === "classify") await runClassify(model, text);
    else await runSeq2seq(model, task, text);
  } catch (e) {
    if (e.name === "AbortError") setStatus("Stopped.", "done");
    else showError(e.message);
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
    controller = null;
  }
}

$("model").addEventListener("change", fillTasks);
$("task").addEventListener("change", taskChanged);
$("run").addEventListener("click", run);
$("stop").addEventListener("click", () => controller && controller.abort());
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("run").disabled) run();
});
// The key is kept for this tab only (sessionStorage: gone when the tab closes, never shared with other tabs
// or written to disk by the browser); a key an older version left in localStorage is removed.
try { localStorage.removeItem("scratchlm-api-key"); } catch (e) { /* storage disabled */ }
$("api-key").value = sessionStorage.getItem("scratchlm-api-key") || "";
$("api-key").addEventListener("change", () => {
  sessionStorage.setItem("scratchlm-api-key", $("api-key").value.trim());
  loadModels();
});

checkHealth();
setInterval(checkHealth, 15000);
loadModels();
