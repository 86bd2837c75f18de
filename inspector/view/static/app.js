// inspector view: the page. Every name from the model is inserted with textContent, never as HTML.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("inspector-token") || "";
sessionStorage.setItem("inspector-token", token);  // a reload of this tab still works
history.replaceState(null, "", location.pathname);  // the token leaves the address bar (and any copy of it)
const state = { model: 0, layers: [], layer: null, image: "", lut: null, maps: null, shape: null,
                compare: false, diff: null, mapsB: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({ "X-Inspector-Token": token }, options.headers || {});
  const response = await fetch("/api/" + path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.status + "";
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function say(text) { $("status").textContent = text; }

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Long work (ScoreCAM, the audit) runs as a job on the server; its progress is polled and shown in `where`.
async function runJob(query, where) {
  let job = await (await api("jobs?" + query, { method: "POST" })).json();
  while (job.state === "running") {
    where.textContent = job.kind + ": " + (job.step || "starting") +
      (job.total ? " " + job.done + "/" + job.total : "") + " (" + job.seconds.toFixed(0) + " s)";
    where.dataset.progress = job.done + "/" + (job.total || "?");
    await sleep(400);
    job = await (await api("jobs?id=" + job.id)).json();
  }
  if (job.state === "failed") throw new Error(job.error);
  return job;
}

function viridis() {  // 256 colours, sampled from matplotlib's viridis at 9 points and interpolated
  const stops = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255 * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = Math.round(stops[k][c] * (1 - f) + stops[k + 1][c] * f);
  }
  return lut;
}

async function loadInfo() {
  const info = await (await api("info")).json();
  state.compare = info.compare;
  $("compare-info").hidden = !info.compare;
  const models = $("model");
  for (const m of info.models) {
    const option = document.createElement("option");
    option.value = m.index; option.textContent = m.name + " (" + m.layers + " conv layers)";
    models.appendChild(option);
  }
  fillImages(info.images);
  for (const name of info.cam_methods) {
    const option = document.createElement("option");
    option.value = name; option.textContent = name;
    $("cam-method").appendChild(option);
  }
}

function fillImages(images) {
  const select = $("image");
  for (const image of images) {
    if ([...select.options].some((o) => o.value === image.id)) continue;
    const option = document.createElement("option");
    option.value = image.id; option.textContent = image.name;
    select.appendChild(option);
  }
}

async function loadLayers() {
  state.layers = await (await api("layers?model=" + state.model)).json();
  const list = $("layers");
  list.replaceChildren();
  for (const layer of state.layers) {
    const item = document.createElement("li");
    item.dataset.index = layer.index;
    item.title = layer.name;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = layer.index + " " + layer.name;
    const op = document.createElement("span");
    op.className = "op";
    op.textContent = "  " + layer.op + (layer.activation ? "/" + layer.activation : "") + " " +
      layer.weight_shape.join("x");
    const sqnr = document.createElement("span");
    sqnr.className = "sqnr";
    item.append(name, op, sqnr);
    item.addEventListener("click", () => selectLayer(layer.index));
    list.appendChild(item);
  }
  filterList();
  loadAudit();
  loadDiff();
}

async function loadAudit() {
  const model = state.model;
  try {
    await runJob("kind=audit&model=" + model, $("audit-summary"));
    if (model !== state.model) return;
    const audit = await (await api("audit?model=" + model)).json();
    for (const layer of audit.layers) {
      const item = $("layers").querySelector('li[data-index="' + layer.index + '"]');
      if (!item) continue;
      item.classList.add("verdict-" + layer.verdict);
      item.dataset.verdict = layer.verdict;
    }
    const counts = {};
    for (const layer of audit.layers) counts[layer.verdict] = (counts[layer.verdict] || 0) + 1;
    delete $("audit-summary").dataset.progress;
    $("audit-summary").textContent = "audit on " + audit.images + " image(s): " +
      Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
  } catch (error) { $("audit-summary").textContent = "audit: " + error.message; }
}

function filterList() {
  const needle = $("search").value.toLowerCase();
  for (const item of $("layers").children) {
    item.hidden = needle !== "" && !item.title.toLowerCase().includes(needle);
  }
}

async function selectLayer(index) {
  state.layer = index;
  const layer = state.layers[index];
  for (const item of $("layers").children) item.classList.toggle("selected", Number(item.dataset.index) === index);
  $("layer-title").textContent = layer.name;
  $("layer-info").textContent = layer.op + (layer.activation ? " + " + layer.activation : "") + ", weights " +
    layer.weight_shape.join("x") + ", groups " + layer.groups + ", output " + layer.output;
  showPair();
  const png = await (await api("filters?model=" + state.model + "&layer=" + index)).blob();
  setImage($("filters"), png);
  await loadMaps();
}

function setImage(img, blob) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
}

function comparing() { return state.compare && state.model === 0; }

async function fetchMaps(model, layer, feeding) {
  const response = await api("maps?model=" + model + "&layer=" + layer + "&image=" +
    encodeURIComponent(state.image) + (feeding ? "&feeding=" + feeding : ""));
  return { shape: response.headers.get("X-Shape").split(",").map(Number),
           values: new Float32Array(await response.arrayBuffer()) };
}

async function loadMaps() {
  const box = $("maps");
  $("maps-b-pane").hidden = true;
  if (state.layer === null || state.image === "") {
    box.replaceChildren(); $("maps-info").textContent = state.image === "" ? "(pick or upload an image)" : "";
    return;
  }
  say("running…");
  const started = performance.now();
  const pair = comparing() ? pairOf(state.layer) : null;
  const a = await fetchMaps(state.model, state.layer, pair ? "diff" : "");
  state.maps = a.values; state.shape = a.shape;
  if (pair && !pair.note) {  // B's counterpart, fed as diff feeds it, drawn on the same per-channel scale
    const b = await fetchMaps(1, pair.index_b, "diff");
    state.mapsB = b.values;
    const ranges = channelRanges(a.values, a.shape, b.values);
    drawMaps($("maps"), $("maps-info"), a.values, a.shape, ranges, "a");
    drawMaps($("maps-b"), $("maps-b-info"), b.values, b.shape, ranges, "b");
    $("maps-b-pane").hidden = false;
  } else {
    drawMaps(box, $("maps-info"), a.values, a.shape, channelRanges(a.values, a.shape, null), "a");
  }
  say("layer " + state.layer + ": " + Math.round(performance.now() - started) + " ms");
}

function dims(shape) { return shape.length === 3 ? shape : [1, shape[0], shape[1]]; }

function channelRanges(values, shape, other) {  // per channel, as `inspector maps --norm map` (over both sides)
  const [channels, height, width] = dims(shape), ranges = [];
  for (let c = 0; c < channels; c++) {
    let lo = Infinity, hi = -Infinity;
    const base = c * height * width;
    for (const array of other ? [values, other] : [values]) {
      for (let i = 0; i < height * width; i++) { const v = array[base + i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    }
    ranges.push([lo, hi]);
  }
  return ranges;
}

function drawMaps(box, info, values, shape, ranges, side) {
  const [channels, height, width] = dims(shape);
  box.replaceChildren();
  $("channel").hidden = true;
  let min = Infinity, max = -Infinity;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; }
  info.textContent = channels + "x" + height + "x" + width + ", min " + min.toPrecision(4) + ", max " +
    max.toPrecision(4);
  info.dataset.shape = shape.join(",");
  info.dataset.min = min; info.dataset.max = max;
  const shown = Math.min(channels, 64);
  for (let c = 0; c < shown; c++) {
    const canvas = document.createElement("canvas");
    canvas.width = width; canvas.height = height; canvas.dataset.channel = c;
    const context = canvas.getContext("2d");
    const pixels = context.createImageData(width, height);
    const [lo, hi] = ranges[c];
    const base = c * height * width;
    const span = hi > lo ? hi - lo : 1;
    for (let i = 0; i < height * width; i++) {
      const k = Math.round((values[base + i] - lo) / span * 255) * 3;
      pixels.data[i * 4] = state.lut[k]; pixels.data[i * 4 + 1] = state.lut[k + 1];
      pixels.data[i * 4 + 2] = state.lut[k + 2]; pixels.data[i * 4 + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
    canvas.title = "channel " + c;
    canvas.addEventListener("mousemove", (event) => readout(event, canvas, c, height, width, values, side));
    canvas.addEventListener("click", () => showChannel(canvas, c, height, width, values, side));
    box.appendChild(canvas);
  }
}

function showChannel(canvas, channel, height, width, maps, side) {  // a larger view of one channel, its statistics
  const view = $("channel-view");
  view.width = width; view.height = height;
  view.getContext("2d").drawImage(canvas, 0, 0);
  const values = maps.subarray(channel * height * width, (channel + 1) * height * width);
  let min = Infinity, max = -Infinity, sum = 0, zeros = 0;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; sum += v; if (v === 0) zeros++; }
  const mean = sum / values.length, stats = $("channel-stats");
  stats.textContent = (comparing() ? side.toUpperCase() + " " : "") + "channel " + channel + ": min " + min.toPrecision(4) + ", max " + max.toPrecision(4) +
    ", mean " + mean.toPrecision(4) + ", zeros " + (100 * zeros / values.length).toFixed(1) + "%";
  Object.assign(stats.dataset, { channel, min, max, mean, zeros: zeros / values.length, side });
  view.onmousemove = (event) => readout(event, view, channel, height, width, maps, side);
  $("channel").hidden = false;
}

function readout(event, canvas, channel, height, width, maps, side) {
  const rect = canvas.getBoundingClientRect();
  const x = Math.min(width - 1, Math.floor((event.clientX - rect.left) / rect.width * width));
  const y = Math.min(height - 1, Math.floor((event.clientY - rect.top) / rect.height * height));
  const value = maps[channel * height * width + y * width + x];
  const out = $("readout");
  out.textContent = (comparing() ? side.toUpperCase() + " " : "") + "channel " + channel + " (y " + y + ", x " + x +
    ") = " + value.toPrecision(6);
  Object.assign(out.dataset, { channel, y, x, value, side });
}

// ---------------------------------------------------------------- two models: diff's pairs and SQNR

function pairOf(index) {
  if (!state.diff) return null;
  return state.diff.layers.find((layer) => layer.index === index) || null;
}

function sqnrText(value) {
  if (value === null || value === undefined) return "-";
  return typeof value === "string" ? value : value.toFixed(2);
}

async function loadDiff() {
  state.diff = null;
  for (const item of $("layers").children) { item.querySelector(".sqnr").textContent = ""; delete item.dataset.sqnr; }
  if (!comparing() || state.image === "") { showPair(); return; }
  const image = state.image;
  try {
    say("comparing…");
    const diff = await (await api("diff?image=" + encodeURIComponent(image))).json();
    if (image !== state.image || !comparing()) return;
    state.diff = diff;
    for (const layer of diff.layers) {
      const item = $("layers").querySelector('li[data-index="' + layer.index + '"]');
      if (!item) continue;
      item.dataset.sqnr = layer.sqnr_db === null ? "" : layer.sqnr_db;
      item.querySelector(".sqnr").textContent = layer.compared ? "  " + sqnrText(layer.sqnr_db) + " dB" :
        "  " + (layer.note || "not compared");
    }
    const worst = diff.worst_layer;
    $("compare-info").textContent = "B: " + diff.models.b.name + "; " + diff.layers.length + " layers paired" +
      (worst ? ", worst " + worst.name + " at " + sqnrText(worst.sqnr_db) + " dB" : "");
    say("compared");
    showPair();
  } catch (error) { say("diff: " + error.message); }
}

function showPair() {
  const out = $("pair-info");
  const pair = comparing() && state.layer !== null ? pairOf(state.layer) : null;
  if (!pair) { out.textContent = ""; delete out.dataset.sqnr; return; }
  out.textContent = "B's " + pair.name_b + " (" + pair.match + ", " + pair.confidence + "): SQNR " +
    sqnrText(pair.sqnr_db) + " dB, cosine " + (pair.cosine === null ? "-" : pair.cosine.toFixed(6)) +
    (pair.note ? ", " + pair.note : "");
  out.dataset.sqnr = pair.sqnr_db === null ? "" : pair.sqnr_db;
  out.dataset.indexB = pair.index_b;
}

// ---------------------------------------------------------------- the model's outputs

async function loadOutputs() {
  if (state.image === "") return;
  const box = $("outputs");
  box.replaceChildren();
  say("outputs…");
  try {
    const data = await (await api("outputs?model=" + state.model + "&image=" + encodeURIComponent(state.image))).json();
    for (const output of data.outputs) {
      const title = document.createElement("p");
      title.className = "small";
      title.textContent = output.name + " " + output.shape.join("x") + (output.max === null ? "" :
        ", range " + output.min.toPrecision(4) + " .. " + output.max.toPrecision(4)) +
        (output.kind === "class maximum" ? ", each class's maximum" : "");
      box.appendChild(title);
      if (!output.top.length) continue;
      const list = document.createElement("ol");
      for (const entry of output.top) {
        const item = document.createElement("li");
        item.textContent = entry.label + ": " + entry.value.toPrecision(4);
        item.dataset.index = entry.index; item.dataset.value = entry.value;
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    say("outputs done");
  } catch (error) { say("outputs: " + error.message); }
}

async function loadCam() {
  if (state.image === "") return;
  const query = "model=" + state.model + "&image=" + encodeURIComponent(state.image) +
    "&method=" + encodeURIComponent($("cam-method").value) + "&target=" + encodeURIComponent($("cam-target").value.trim());
  say("CAM…");
  try {
    await runJob("kind=cam&" + query, $("cam-info"));  // ScoreCAM takes long: polled, layer clicks go on
    const summary = await (await api("cam?" + query)).json();
    const png = await (await api("cam?format=png&" + query)).blob();
    setImage($("cam"), png);
    delete $("cam-info").dataset.progress;
    $("cam-info").textContent = summary.method + " on " + summary.layer +
      (summary.target_label ? ", target " + summary.target_label : "");
    say("CAM done");
  } catch (error) { say("CAM: " + error.message); }
}

async function upload(file) {
  say("uploading…");
  try {
    const response = await api("images", { method: "POST", body: file,
      headers: { "X-Image-Name": encodeURIComponent(file.name).slice(0, 200) } });
    const image = await response.json();
    fillImages([image]);
    $("image").value = image.id;
    await chooseImage(image.id);
  } catch (error) { say("upload refused: " + error.message); }
}

async function chooseImage(id) {
  state.image = id;
  $("cam-button").disabled = id === "";
  $("outputs-button").disabled = id === "";
  $("cam").removeAttribute("src"); $("cam-info").textContent = "";
  $("outputs").replaceChildren();
  await loadDiff();  // with two models: diff's figures first, the maps of both sides then
  try { await loadMaps(); } catch (error) { say(error.message); }
}

window.addEventListener("DOMContentLoaded", async () => {
  state.lut = viridis();
  $("search").addEventListener("input", filterList);
  $("image").addEventListener("change", (e) => chooseImage(e.target.value));
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("cam-button").addEventListener("click", loadCam);
  $("outputs-button").addEventListener("click", loadOutputs);
  $("model").addEventListener("change", async (e) => {
    state.model = Number(e.target.value); state.layer = null; await loadLayers();
  });
  try {
    await loadInfo();
    await loadLayers();
    say("ready");
  } catch (error) { say("error: " + error.message); }
});
