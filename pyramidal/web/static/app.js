// The page of `pyramidal serve`: pick an image and a task, paint a mask, restore, compare, download.
// Plain JavaScript, no libraries; it talks only to this server's /api routes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = {
    drop: $("drop"), file: $("file"), limits: $("limits"), sample: $("sample"),
    task: $("task"), taskDesc: $("task-desc"), weights: $("weights"), weightsNote: $("weights-note"),
    maskSection: $("mask-section"), maskAutoLabel: $("mask-auto-label"), maskHint: $("mask-hint"),
    paintTools: $("paint-tools"), brush: $("brush"), brushOut: $("brush-out"), maskClear: $("mask-clear"),
    toolBrush: $("tool-brush"), toolEraser: $("tool-eraser"), toolPan: $("tool-pan"),
    ensemble: $("ensemble"), strength: $("strength"), strengthOut: $("strength-out"),
    tile: $("tile"), restore: $("restore"),
    progressBox: $("progress-box"), progress: $("progress"), progressText: $("progress-text"),
    error: $("error"), warning: $("warning"),
    leftChoice: $("left-choice"), zoomIn: $("zoom-in"), zoomOut: $("zoom-out"), zoomFit: $("zoom-fit"),
    zoom1: $("zoom-1"), zoomLabel: $("zoom-label"), download: $("download"),
    stage: $("stage"), layer: $("layer"), before: $("img-before"), after: $("img-after"),
    maskCanvas: $("mask-canvas"), divider: $("divider"), tagLeft: $("tag-left"), tagRight: $("tag-right"),
    placeholder: $("placeholder"), meta: $("meta"), scoresBox: $("scores-box"), scores: $("scores"),
    allScores: $("all-scores"),
  };

  const state = {
    info: null,
    source: null, // {kind: "file", file, name} or {kind: "sample", index}
    width: 0, height: 0, previewed: false, tooLarge: false,
    objectURL: null, inputURL: null, cleanURL: null,
    busy: false, job: null, sampleIndex: 0,
    view: { s: 1, tx: 0, ty: 0 }, divider: 0.5,
    tool: "brush", showMask: false, drag: null, lastPaint: null,
  };

  // ------------------------------------------------------------------ helpers

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
  const megapixels = (n) => (n / 1e6).toLocaleString("en", { maximumFractionDigits: 1 });
  const megabytes = (n) => (n / 2 ** 20).toLocaleString("en", { maximumFractionDigits: 1 });

  async function api(path, options) {
    const response = await fetch(path, options);
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((body && body.error) || `the server answered ${response.status} ${response.statusText}`);
    }
    return body;
  }

  function showError(message) { el.error.textContent = message; el.error.hidden = false; }
  function showWarning(message) { el.warning.textContent = message; el.warning.hidden = false; }
  function clearMessages() { el.error.hidden = true; el.warning.hidden = true; }

  function loadImage(img, url) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser could not show the image"));
      img.src = url;
    });
  }

  const taskInfo = () => state.info.tasks.find((t) => t.name === el.task.value);
  const weightsInfo = () => state.info.weights.find((w) => w.id === el.weights.value);
  const maskMode = () => (document.querySelector("input[name=maskmode]:checked") || {}).value || "none";
  const hasImage = () => state.width > 0 && !el.before.hidden;
  const paintActive = () => state.source && state.source.kind === "file" && state.previewed &&
    taskInfo().maskable && maskMode() === "paint";

  // ------------------------------------------------------------------ set-up

  async function init() {
    try {
      state.info = await api("/api/info");
    } catch (e) {
      showError(`cannot reach the pyramidal server: ${e.message}`);
      return;
    }
    const limits = state.info.limits;
    el.limits.textContent = `Up to ${megapixels(limits.max_pixels)} MP, ${megabytes(limits.max_upload_bytes)} MB.`;
    for (const t of state.info.tasks) {
      el.task.add(new Option(t.builtin ? t.name : `${t.name} (no built-in weights)`, t.name));
    }
    el.task.value = state.info.tasks.some((t) => t.name === "noise") ? "noise" : state.info.tasks[0].name;
    for (const w of state.info.weights) el.weights.add(new Option(w.label, w.id));
    el.tile.value = state.info.tile;
    [el.tile.min, el.tile.max] = state.info.limits.tile_range;
    el.strength.min = state.info.strength.min * 100;
    el.strength.max = state.info.strength.max * 100;
    el.strength.value = state.info.strength.default * 100;
    bindEvents();
    onTaskChange();
    render();
  }

  function bindEvents() {
    el.drop.addEventListener("click", () => el.file.click());
    el.drop.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); el.file.click(); }
    });
    el.file.addEventListener("change", () => { if (el.file.files[0]) loadFile(el.file.files[0]); el.file.value = ""; });
    document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
    document.addEventListener("dragleave", (e) => {
      if (!e.relatedTarget) document.body.classList.remove("dragging");
    });
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      document.body.classList.remove("dragging");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) loadFile(file);
    });
    document.addEventListener("paste", (e) => {
      const files = [...((e.clipboardData && e.clipboardData.files) || [])];
      const file = files.find((f) => f.type.startsWith("image/")) || files[0];
      if (file) { e.preventDefault(); loadFile(file); }
    });
    el.sample.addEventListener("click", () => runSample(state.sampleIndex++));
    el.task.addEventListener("change", onTaskChange);
    el.weights.addEventListener("change", () => { updateWeightsNote(); updateRestoreButton(); });
    for (const radio of document.querySelectorAll("input[name=maskmode]")) {
      radio.addEventListener("change", onMaskModeChange);
    }
    for (const radio of document.querySelectorAll("input[name=left]")) radio.addEventListener("change", onLeftChange);
    el.toolBrush.addEventListener("click", () => setTool("brush"));
    el.toolEraser.addEventListener("click", () => setTool("eraser"));
    el.toolPan.addEventListener("click", () => setTool("pan"));
    el.maskClear.addEventListener("click", () => { clearMask(); state.showMask = true; render(); });
    el.brush.addEventListener("input", () => { el.brushOut.textContent = `${el.brush.value} px`; });
    el.strength.addEventListener("input", () => { el.strengthOut.textContent = `${el.strength.value} %`; });
    el.restore.addEventListener("click", restore);
    el.zoomFit.addEventListener("click", () => { fit(); render(); });
    el.zoom1.addEventListener("click", () => zoomAround(1, el.stage.clientWidth / 2, el.stage.clientHeight / 2));
    el.zoomIn.addEventListener("click", () => zoomAround(state.view.s * 1.5, el.stage.clientWidth / 2, el.stage.clientHeight / 2));
    el.zoomOut.addEventListener("click", () => zoomAround(state.view.s / 1.5, el.stage.clientWidth / 2, el.stage.clientHeight / 2));
    el.stage.addEventListener("wheel", onWheel, { passive: false });
    el.stage.addEventListener("pointerdown", onPointerDown);
    el.stage.addEventListener("pointermove", onPointerMove);
    el.stage.addEventListener("pointerup", onPointerUp);
    el.stage.addEventListener("pointercancel", onPointerUp);
    el.divider.addEventListener("keydown", (e) => {
      const step = { ArrowLeft: -0.02, ArrowRight: 0.02 }[e.key];
      if (step) { e.preventDefault(); state.divider = clamp(state.divider + step, 0, 1); render(); }
    });
    window.addEventListener("resize", render);
  }

  // ------------------------------------------------------------------ choices

  function onTaskChange() {
    const t = taskInfo();
    el.taskDesc.textContent = t.description;
    const builtin = [...el.weights.options].find((o) => o.value === "builtin");
    if (builtin) builtin.disabled = !t.builtin;
    if (el.weights.value === "builtin" && !t.builtin) {
      const trained = state.info.weights.find((w) => w.task === t.name) || state.info.weights.find((w) => w.id !== "builtin");
      if (trained) el.weights.value = trained.id;
    }
    el.maskSection.hidden = !t.maskable;
    el.maskAutoLabel.hidden = !t.hole;
    setMaskMode(t.hole ? "auto" : "none");
    updateWeightsNote();
    updateRestoreButton();
  }

  function updateWeightsNote() {
    const t = taskInfo();
    const w = weightsInfo();
    let note = "";
    if (w.id === "builtin" && !t.builtin) {
      note = `No built-in weights for ${t.name}: start the server with --weights FILE trained for it.`;
    } else if (w.task && w.task !== t.name) {
      note = `These weights were trained for ${w.task}, not ${t.name}.`;
    }
    el.weightsNote.textContent = note;
  }

  function setMaskMode(mode) {
    const radio = document.querySelector(`input[name=maskmode][value=${mode}]`);
    if (radio) radio.checked = true;
    onMaskModeChange();
  }

  function onMaskModeChange() {
    const mode = maskMode();
    el.paintTools.hidden = mode !== "paint";
    el.maskHint.textContent = {
      auto: "Holes are the pixels close to magenta (255, 0, 255); every other pixel is kept exactly.",
      paint: "Paint over the damage. Every pixel outside the mask is kept exactly.",
      none: "No mask: the model sees the whole image and may change any pixel.",
    }[mode];
    if (mode === "paint") { state.showMask = true; setTool("brush"); }
    render();
  }

  function setTool(tool) {
    state.tool = tool;
    el.toolBrush.setAttribute("aria-pressed", String(tool === "brush"));
    el.toolEraser.setAttribute("aria-pressed", String(tool === "eraser"));
    el.toolPan.setAttribute("aria-pressed", String(tool === "pan"));
    render();
  }

  function onLeftChange() {
    const left = document.querySelector("input[name=left]:checked").value;
    el.before.src = left === "clean" && state.cleanURL ? state.cleanURL : state.inputURL;
    el.tagLeft.textContent = left === "clean" ? "ground truth" : "damaged input";
  }

  function updateRestoreButton() {
    const t = taskInfo();
    const w = weightsInfo();
    const weightsOk = w && (w.id !== "builtin" || t.builtin);
    el.restore.disabled = state.busy || !state.source || state.tooLarge || !weightsOk;
    el.sample.disabled = state.busy || !weightsOk;
  }

  // ------------------------------------------------------------------ inputs

  function resetResult() {
    state.job = null;
    state.cleanURL = null;
    el.after.hidden = true;
    el.after.removeAttribute("src");
    el.divider.hidden = true;
    el.tagLeft.hidden = el.tagRight.hidden = true;
    el.download.hidden = true;
    el.leftChoice.hidden = true;
    document.querySelector("input[name=left][value=input]").checked = true;
    el.scoresBox.hidden = true;
    $("viewer").classList.remove("with-scores");
    el.meta.textContent = "";
    state.divider = 0.5;
  }

  function setStage(url, width, height) {
    state.width = width;
    state.height = height;
    state.inputURL = url;
    el.placeholder.hidden = Boolean(url);
    el.before.hidden = !url;
    if (url) el.before.src = url; else el.before.removeAttribute("src");
    el.layer.style.width = `${width}px`;
    el.layer.style.height = `${height}px`;
    for (const node of [el.before, el.after, el.maskCanvas]) {
      node.style.width = `${width}px`;
      node.style.height = `${height}px`;
    }
  }

  function clearMask() {
    el.maskCanvas.width = state.width || 1;
    el.maskCanvas.height = state.height || 1;
  }

  function loadFile(file) {
    clearMessages();
    resetResult();
    const limits = state.info.limits;
    if (file.size > limits.max_upload_bytes) {
      showError(`${file.name}: ${megabytes(file.size)} MB is over the upload limit of ` +
        `${megabytes(limits.max_upload_bytes)} MB`);
      return;
    }
    if (state.objectURL) URL.revokeObjectURL(state.objectURL);
    state.objectURL = URL.createObjectURL(file);
    state.source = { kind: "file", file, name: file.name || "pasted.png" };
    state.tooLarge = false;
    const probe = new Image();
    probe.onload = () => {
      const w = probe.naturalWidth;
      const h = probe.naturalHeight;
      state.previewed = true;
      if (w * h > limits.max_pixels) {
        state.tooLarge = true;
        showError(`${state.source.name}: ${w}×${h} px is ${megapixels(w * h)} MP; the limit is ` +
          `${megapixels(limits.max_pixels)} MP`);
      }
      setStage(state.objectURL, w, h);
      clearMask();
      el.meta.textContent = `${state.source.name}: ${w}×${h} px`;
      fit();
      render();
      updateRestoreButton();
    };
    probe.onerror = () => {
      // Some formats (TIFF, 16-bit PPM) are not shown by browsers; the server may still read them.
      state.previewed = false;
      setStage(null, 0, 0);
      el.meta.textContent = `${state.source.name}: this browser cannot show the file; the server will try to read it`;
      render();
      updateRestoreButton();
    };
    probe.src = state.objectURL;
    updateRestoreButton();
  }

  // ------------------------------------------------------------------ jobs

  function options() {
    const form = new FormData();
    form.append("task", el.task.value);
    form.append("weights", el.weights.value);
    form.append("ensemble", el.ensemble.checked ? "1" : "0");
    form.append("tile", el.tile.value);
    form.append("strength", String(el.strength.value / 100));
    return form;
  }

  async function restore() {
    if (!state.source) return;
    if (state.source.kind === "sample") { runSample(state.source.index); return; }
    clearMessages();
    const form = options();
    const mode = taskInfo().maskable ? maskMode() : "none";
    form.append("mask_mode", mode);
    form.append("previewed", state.previewed ? "1" : "0");
    if (mode === "paint") {
      if (!state.previewed) { showError("this browser cannot show the image, so a mask cannot be painted on it"); return; }
      const blob = await new Promise((resolve) => el.maskCanvas.toBlob(resolve, "image/png"));
      form.append("mask", blob, "mask.png");
    }
    form.append("image", state.source.file, state.source.name);
    submit("/api/restore", form);
  }

  function runSample(index) {
    clearMessages();
    resetResult();
    state.source = { kind: "sample", index };
    state.tooLarge = false;
    setStage(null, 0, 0);
    el.placeholder.textContent = "Damaging a validation photograph…";
    const form = options();
    form.append("index", String(index));
    submit("/api/sample", form);
  }

  function setBusy(busy) {
    state.busy = busy;
    updateRestoreButton();
  }

  function showProgress(text, done, total) {
    el.progressBox.hidden = false;
    el.progressText.textContent = text;
    if (total > 0) { el.progress.max = total; el.progress.value = done; } else { el.progress.removeAttribute("value"); }
  }

  async function submit(url, form) {
    setBusy(true);
    showProgress("uploading…", 0, 0);
    let job;
    try {
      job = await api(url, { method: "POST", body: form });
    } catch (e) {
      setBusy(false);
      el.progressBox.hidden = true;
      showError(e.message);
      return;
    }
    poll(job.id);
  }

  async function poll(id) {
    let status;
    try {
      status = await api(`/api/jobs/${id}`);
    } catch (e) {
      finish();
      showError(e.message);
      return;
    }
    if (status.state === "queued") {
      showProgress(status.position > 1 ? `queued: ${status.position - 1} ahead of yours` : "queued: next", 0, 0);
    } else if (status.state === "running") {
      showProgress(status.total ? `restoring: ${status.done} of ${status.total} tile batches` : "starting…",
        status.done, status.total);
    } else if (status.state === "error") {
      finish();
      showError(status.error);
      return;
    } else if (status.state === "done") {
      // A fast restore can finish between two polls: say what it ran before the result replaces the bar.
      if (status.total) showProgress(`restored: ${status.done} of ${status.total} tile batches`, status.done, status.total);
      try {
        await showResult(status);
      } catch (e) {
        showError(e.message);
      }
      finish();
      return;
    }
    setTimeout(() => poll(id), 200);
  }

  function finish() {
    setBusy(false);
    el.progressBox.hidden = true;
  }

  async function showResult(status) {
    const base = `/api/jobs/${status.id}`;
    state.job = status;
    if (status.kind === "sample") {
      setStage(`${base}/input.png`, status.width, status.height);
      state.cleanURL = `${base}/clean.png`;
      el.leftChoice.hidden = false;
      el.placeholder.textContent = "Drop a photo anywhere on the page, or try a sample.";
      await loadImage(el.before, state.inputURL);
      fit();
    } else if (status.files.includes("input")) {
      setStage(`${base}/input.png`, status.width, status.height);
      await loadImage(el.before, state.inputURL);
      fit();
    }
    await loadImage(el.after, `${base}/result.png`);
    el.after.hidden = false;
    el.divider.hidden = false;
    el.tagLeft.hidden = el.tagRight.hidden = false;
    el.tagLeft.textContent = "damaged input";
    el.tagRight.textContent = "restored";
    state.showMask = false;
    const stem = status.kind === "sample"
      ? `${status.sample.name.replace(/[^A-Za-z0-9_-]+/g, "-")}-${status.task}`
      : state.source.name.replace(/\.[^.]*$/, "");
    el.download.href = `${base}/result.png`;
    el.download.download = `${stem}-restored.png`;
    el.download.hidden = false;
    let meta = `${status.width}×${status.height} px · task ${status.task} · ${status.seconds} s`;
    if (status.sample) {
      meta = `sample: ${status.sample.name} (crop ${status.sample.index + 1} of ${status.sample.count})` +
        (status.sample.setting ? `, ${status.sample.setting}` : "") + ` · ${meta}`;
    }
    el.meta.textContent = meta;
    if (status.scores) showScores(status.scores);
    if (status.warning) showWarning(status.warning);
    if (status.scores) fit(); // the stage is shorter with the scores below it
    render();
  }

  function cell(value, digits) {
    if (value === null || value === undefined) return "–";
    if (value === "inf") return "∞";
    return Number(value).toFixed(digits);
  }

  function fillRows(tbody, rows, withNote) {
    tbody.replaceChildren();
    for (const r of rows) {
      const tr = document.createElement("tr");
      if (r.kind === "model") tr.className = "ours";
      const values = [r.label || r.method, cell(r.psnr, 2), cell(r.ssim, 3)];
      if (withNote) values.push(r.note || "");
      for (const v of values) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  function showScores(scores) {
    const input = scores.rows.find((r) => r.kind === "input");
    const ours = scores.rows.find((r) => r.kind === "model");
    const best = scores.rows.find((r) => r.method === scores.best_classical);
    const notRun = scores.rows.filter((r) => r.kind === "baseline" && r.psnr === null);
    const rows = [input];
    const bestLabel = notRun.length ? "best classical run" : "best classical";
    rows.push(best ? { ...best, label: `${bestLabel}: ${best.method}` }
      : { method: `${bestLabel}: none for this task`, psnr: null, ssim: null });
    rows.push(ours);
    fillRows(el.scores.tBodies[0], rows, false);
    const note = $("scores-note");
    note.textContent = notRun.map((r) => `${r.method}: ${r.note}.`).join(" ");
    note.hidden = !notRun.length;
    fillRows(el.allScores.tBodies[0], scores.rows.filter((r) => r.kind === "baseline"), true);
    el.scoresBox.hidden = false;
    $("viewer").classList.add("with-scores");
  }

  // ------------------------------------------------------------------ viewer

  function fit() {
    if (!state.width) return;
    const W = el.stage.clientWidth;
    const H = el.stage.clientHeight;
    const s = Math.min(W / state.width, H / state.height);
    state.view = { s, tx: (W - state.width * s) / 2, ty: (H - state.height * s) / 2 };
  }

  function zoomAround(s, cx, cy) {
    if (!state.width) return;
    const v = state.view;
    const next = clamp(s, 0.02, 32);
    const ix = (cx - v.tx) / v.s;
    const iy = (cy - v.ty) / v.s;
    state.view = { s: next, tx: cx - ix * next, ty: cy - iy * next };
    render();
  }

  function onWheel(e) {
    if (!hasImage()) return;
    e.preventDefault();
    const r = el.stage.getBoundingClientRect();
    zoomAround(state.view.s * Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
  }

  function onPointerDown(e) {
    if (!hasImage() || e.button !== 0) return;
    if (e.target.closest("#divider")) {
      state.drag = { kind: "divider" };
    } else if (paintActive() && state.tool !== "pan") {
      state.drag = { kind: "paint" };
      state.showMask = true;
      state.lastPaint = null;
      paintAt(e);
    } else {
      state.drag = { kind: "pan", x: e.clientX, y: e.clientY, tx: state.view.tx, ty: state.view.ty };
      el.stage.classList.add("panning");
    }
    el.stage.setPointerCapture(e.pointerId);
    e.preventDefault();
    render();
  }

  function onPointerMove(e) {
    const drag = state.drag;
    if (!drag) return;
    if (drag.kind === "divider") {
      const r = el.stage.getBoundingClientRect();
      state.divider = clamp((e.clientX - r.left) / r.width, 0, 1);
    } else if (drag.kind === "paint") {
      paintAt(e);
    } else {
      state.view.tx = drag.tx + e.clientX - drag.x;
      state.view.ty = drag.ty + e.clientY - drag.y;
    }
    render();
  }

  function onPointerUp() {
    state.drag = null;
    state.lastPaint = null;
    el.stage.classList.remove("panning");
  }

  function paintAt(e) {
    const r = el.layer.getBoundingClientRect();
    const x = (e.clientX - r.left) * state.width / r.width;
    const y = (e.clientY - r.top) * state.height / r.height;
    const ctx = el.maskCanvas.getContext("2d");
    const size = Number(el.brush.value);
    ctx.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
    ctx.fillStyle = ctx.strokeStyle = "#ff00ff";
    ctx.lineWidth = size;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    if (state.lastPaint) {
      ctx.moveTo(state.lastPaint.x, state.lastPaint.y);
      ctx.lineTo(x, y);
      ctx.stroke();
    } else {
      ctx.arc(x, y, size / 2, 0, 2 * Math.PI);
      ctx.fill();
    }
    state.lastPaint = { x, y };
  }

  function render() {
    const v = state.view;
    el.layer.style.transform = `translate(${v.tx}px, ${v.ty}px) scale(${v.s})`;
    el.layer.classList.toggle("pixelated", v.s >= 2);
    el.zoomLabel.textContent = state.width ? `${Math.round(v.s * 100)} %` : "–";
    if (!el.after.hidden) {
      const dx = state.divider * el.stage.clientWidth;
      el.divider.style.left = `${dx}px`;
      el.divider.setAttribute("aria-valuenow", String(Math.round(state.divider * 100)));
      const ix = clamp((dx - v.tx) / v.s, 0, state.width);
      el.after.style.clipPath = `inset(0 0 0 ${ix}px)`;
    }
    el.maskCanvas.hidden = !(paintActive() && state.showMask);
    el.stage.classList.toggle("painting", paintActive() && state.tool !== "pan");
  }

  init();
})();
