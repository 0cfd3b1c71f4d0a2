// hemalite serve: the page works without this script (plain forms); with it, uploads go one
// image per request with a result card each, and the live view shows its label and FPS.
// No build step: this file is served as it is.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const list = $("result-list");
  const summary = $("summary");

  async function refreshSummary() {
    try {
      const response = await fetch(summary.dataset.url, {cache: "no-store"});
      if (response.ok) summary.textContent = await response.text();
    } catch (err) { /* the next result refreshes it */ }
  }

  function errorCard(name, message) {  // built as text: the name comes from the user's disk
    const item = document.createElement("li");
    item.className = "result error";
    const title = document.createElement("h3");
    title.className = "source";
    title.textContent = name;
    const line = document.createElement("p");
    line.className = "label";
    const strong = document.createElement("strong");
    strong.textContent = "ERROR";
    line.append(strong, " " + message.trim());
    item.append(title, line);
    list.prepend(item);
  }

  // ---- the live view: the stream starts after the page has loaded (an endless image must
  // not hold the load event), reconnects when it ends, and the status line is polled.
  const stream = $("stream");
  if (stream) {
    const toggle = $("heatmap-toggle");
    const open = () => {
      stream.src = stream.dataset.src + "?heatmap=" + (toggle.checked ? "1" : "0") +
        "&t=" + Date.now();
    };
    if (document.readyState === "complete") open(); else window.addEventListener("load", open);
    toggle.addEventListener("change", open);
    stream.addEventListener("error", () => setTimeout(open, 3000));
    const status = $("live-status");
    const say = (text, refer) => {  // aria-live: only when the verdict changes
      if (status.textContent !== text) status.textContent = text;
      status.classList.toggle("refer", !!refer);
    };
    async function poll() {
      try {
        const response = await fetch(status.dataset.url, {cache: "no-store"});
        const s = await response.json();
        if (s.frame === null) {
          say(s.error ? "Live source: " + s.error : "waiting for the first frame…", false);
        } else {
          say(s.refer ? `REFER · ${s.reason}: ${s.detail} (best guess ${s.top[0][0]} ` +
                        `${s.probability.toFixed(3)})`
                      : `${s.label} ${s.probability.toFixed(3)}`, s.refer);
          $("live-fps").textContent = s.fps.toFixed(1);
          $("live-frame").textContent = s.frame;
        }
      } catch (err) {
        say("The server does not answer.", false);
      }
      setTimeout(poll, 1000);
    }
    poll();
    $("keep-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await fetch(event.target.action + "?fragment=1", {method: "POST"});
      if (response.ok) list.insertAdjacentHTML("afterbegin", await response.text());
      else errorCard("live frame", await response.text());
      refreshSummary();
    });
  }

  // ---- uploads: every image of the inputs (a folder's only under the names edge-classify
  // takes from a folder), one request each, in order; a card per image as it comes. A folder
  // whose sub-folders are cases then gets one call per case (POST /cases, made on the server
  // by edge-classify --cases' functions from those images' results): no case logic here.
  const form = $("upload-form");
  const extensions = form.dataset.extensions.split(" ");
  const progress = $("progress");
  const isImage = (name) => extensions.some((e) => name.toLowerCase().endsWith(e));
  const caseList = $("case-list");
  const caseProgress = $("case-progress");

  function insertCard(text) {  // the server's card; its entry number for the case call
    const template = document.createElement("template");
    template.innerHTML = text;
    const card = template.content.querySelector("li[data-number]");
    list.prepend(template.content);
    return card ? card.dataset.number : null;
  }

  async function callCases(folder, numbers, seen) {
    caseProgress.textContent = `Calling ${seen.size} case${seen.size === 1 ? "" : "s"}…`;
    const body = new FormData();
    body.append("folder", folder);
    numbers.forEach((n) => body.append("entry", n));
    seen.forEach((c) => body.append("case", c));
    try {
      const response = await fetch(caseList.dataset.url + "?fragment=1", {method: "POST", body});
      const text = await response.text();
      if (response.ok) {
        caseList.insertAdjacentHTML("afterbegin", text);
        caseProgress.textContent = `${seen.size} case${seen.size === 1 ? "" : "s"} of ` +
          `${folder} called.`;
      } else {
        caseProgress.textContent = "The cases could not be called: " + text.trim();
      }
    } catch (err) {
      caseProgress.textContent = "The cases could not be called: the server did not answer.";
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...$("folder").files];
    const folderFiles = chosen.filter((f) => isImage(f.name));
    const files = [...$("files").files, ...folderFiles];
    if (!files.length) {
      progress.textContent = "Choose images or a folder first.";
      return;
    }
    // the folder chosen and its sub-folders (cases), from every file's path: a sub-folder
    // holding no image is still a case, as edge-classify gives it
    const folder = chosen.length ? chosen[0].webkitRelativePath.split("/")[0] : "";
    const seen = new Set(chosen.map((f) => f.webkitRelativePath.split("/"))
      .filter((parts) => parts.length > 2).map((parts) => parts[1]));
    const numbers = [];
    const button = $("classify");
    button.disabled = true;
    let failed = 0;
    for (const [i, file] of files.entries()) {
      const name = file.webkitRelativePath || file.name;
      progress.textContent = `Classifying ${i + 1} of ${files.length}: ${name}`;
      const body = new FormData();
      body.append("image", file, name);
      try {
        const response = await fetch(form.action + "?fragment=1", {method: "POST", body});
        const text = await response.text();
        if ((response.headers.get("Content-Type") || "").startsWith("text/html")) {
          const number = insertCard(text);
          if (number && file.webkitRelativePath) numbers.push(number);
          failed += response.ok ? 0 : 1;
        } else {
          errorCard(name, text);
          failed += 1;
        }
      } catch (err) {
        errorCard(name, "the server did not answer");
        failed += 1;
      }
    }
    progress.textContent = `${files.length} sent: ${files.length - failed} classified` +
      (failed ? `, ${failed} failed.` : ".");
    if ($("as-cases").checked) {
      if (seen.size) await callCases(folder, numbers, seen);
      else caseProgress.textContent = folder ? `No sub-folder in ${folder}: no case to call.`
                                             : "Choose a folder whose sub-folders are cases.";
    }
    form.reset();
    button.disabled = false;
    refreshSummary();
  });

  $("clear-form").addEventListener("submit", (event) => {
    if (!window.confirm("Clear this session's results? The history CSV starts again empty.")) {
      event.preventDefault();
    }
  });
})();
