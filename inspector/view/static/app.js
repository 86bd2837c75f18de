// inspector view: the page. Every name from the model is inserted with textContent, never as HTML.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("inspector-token") || "";
sessionStorage.setItem("inspector-token", token);  // a reload of this tab still works
history.replaceState(null, "", location.pathname);  // the token leaves the address bar (and any copy of it)
const state = { model: 0, layers: [], layer: null, image: "", lut: null, maps: null, shape: null };
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
  const models = $("model");
  for (const m of info.models) {
    const option = document.createElement("option");
    option.value = m.index; option.textContent = m.name + " (" + m.layers + " conv layers)";
    models.appendChild(option);
  }
  fillImages(info.images);
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
    item.append(name, op);
    item.addEventListener("click", () => selectLayer(layer.index));
    list.appendChild(item);
  }
  filterList();
  loadAudit();
}

async function loadAudit() {
  try {
    const audit = await (await api("audit?model=" + state.model)).json();
    for (const layer of audit.layers) {
      const item = $("layers").querySelector('li[data-index="' + layer.index + '"]');
      if (!item) continue;
      item.classList.add("verdict-" + layer.verdict);
      item.dataset.verdict = layer.verdict;
    }
    const counts = {};
    for (const layer of audit.layers) counts[layer.verdict] = (counts[layer.verdict] || 0) + 1;
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
  const png = await (await api("filters?model=" + state.model + "&layer=" + index)).blob();
  setImage($("filters"), png);
  await loadMaps();
}

function setImage(img, blob) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
}

async function loadMaps() {
  const box = $("maps");
  if (state.layer === null || state.image === "") {
    box.replaceChildren(); $("maps-info").textContent = state.image === "" ? "(pick or upload an image)" : "";
    return;
  }
  say("running…");
  const started = performance.now();
  const response = await api("maps?model=" + state.model + "&layer=" + state.layer + "&image=" +
    encodeURIComponent(state.image));
  const shape = response.headers.get("X-Shape").split(",").map(Number);
  const values = new Float32Array(await response.arrayBuffer());
  state.maps = values; state.shape = shape;
  drawMaps(values, shape);
  say("layer " + state.layer + ": " + Math.round(performance.now() - started) + " ms");
}

function drawMaps(values, shape) {
  const [channels, height, width] = shape.length === 3 ? shape : [1, shape[0], shape[1]];
  const box = $("maps");
  box.replaceChildren();
  $("channel").hidden = true;
  let min = Infinity, max = -Infinity;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; }
  const info = $("maps-info");
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
    let lo = Infinity, hi = -Infinity;  // per channel, as `inspector maps --norm map`
    const base = c * height * width;
    for (let i = 0; i < height * width; i++) { const v = values[base + i]; if (v < lo) lo = v; if (v > hi) hi = v; }
    const span = hi > lo ? hi - lo : 1;
    for (let i = 0; i < height * width; i++) {
      const k = Math.round((values[base + i] - lo) / span * 255) * 3;
      pixels.data[i * 4] = state.lut[k]; pixels.data[i * 4 + 1] = state.lut[k + 1];
      pixels.data[i * 4 + 2] = state.lut[k + 2]; pixels.data[i * 4 + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
    canvas.title = "channel " + c;
    canvas.addEventListener("mousemove", (event) => readout(event, canvas, c, height, width));
    canvas.addEventListener("click", () => showChannel(canvas, c, height, width));
    box.appendChild(canvas);
  }
}

function showChannel(canvas, channel, height, width) {  // a larger view of one channel, and its statistics
  const view = $("channel-view");
  view.width = width; view.height = height;
  view.getContext("2d").drawImage(canvas, 0, 0);
  const values = state.maps.subarray(channel * height * width, (channel + 1) * height * width);
  let min = Infinity, max = -Infinity, sum = 0, zeros = 0;
  for (const v of values) { if (v < min) min = v; if (v > max) max = v; sum += v; if (v === 0) zeros++; }
  const mean = sum / values.length, stats = $("channel-stats");
  stats.textContent = "channel " + channel + ": min " + min.toPrecision(4) + ", max " + max.toPrecision(4) +
    ", mean " + mean.toPrecision(4) + ", zeros " + (100 * zeros / values.length).toFixed(1) + "%";
  Object.assign(stats.dataset, { channel, min, max, mean, zeros: zeros / values.length });
  view.onmousemove = (event) => readout(event, view, channel, height, width);
  $("channel").hidden = false;
}

function readout(event, canvas, channel, height, width) {
  const rect = canvas.getBoundingClientRect();
  const x = Math.min(width - 1, Math.floor((event.clientX - rect.left) / rect.width * width));
  const y = Math.min(height - 1, Math.floor((event.clientY - rect.top) / rect.height * height));
  const value = state.maps[channel * height * width + y * width + x];
  const out = $("readout");
  out.textContent = "channel " + channel + " (y " + y + ", x " + x + ") = " + value.toPrecision(6);
  out.dataset.channel = channel; out.dataset.y = y; out.dataset.x = x; out.dataset.value = value;
}

async function loadCam() {
  if (state.image === "") return;
  say("CAM…");
  try {
    const summary = await (await api("cam?model=" + state.model + "&image=" + encodeURIComponent(state.image))).json();
    const png = await (await api("cam?format=png&model=" + state.model + "&image=" +
      encodeURIComponent(state.image))).blob();
    setImage($("cam"), png);
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
  $("cam").removeAttribute("src"); $("cam-info").textContent = "";
  try { await loadMaps(); } catch (error) { say(error.message); }
}

window.addEventListener("DOMContentLoaded", async () => {
  state.lut = viridis();
  $("search").addEventListener("input", filterList);
  $("image").addEventListener("change", (e) => chooseImage(e.target.value));
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
  $("cam-button").addEventListener("click", loadCam);
  $("model").addEventListener("change", async (e) => {
    state.model = Number(e.target.value); state.layer = null; await loadLayers();
  });
  try {
    await loadInfo();
    await loadLayers();
    say("ready");
  } catch (error) { say("error: " + error.message); }
});
