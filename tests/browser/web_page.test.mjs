// Browser tests of the web page `tide serve` serves: what a user does with it, in Debian's chromium driven by
// puppeteer-core, against a real server computing with a tiny random-weight model.
//
//   TIDE_BINARY=build/tide node --test web_page.test.mjs      (or: node web_page.test.mjs build/tide)
//
// Environment: TIDE_BINARY (the tide binary; else the first argument), CHROMIUM (default /usr/bin/chromium),
// TIDE_WEB_PAGE_OVERRIDE (a page file answered for "/" instead of the binary's, every API call still reaching
// the real server: for trying page edits without rebuilding tide; off by default), TIDE_SCREENSHOT_DIR (where
// the screenshots go; default browser-screenshots/ beside the tide binary, i.e. in the build folder).
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import puppeteer from "puppeteer-core";

import { pngSize, pngTextChunks } from "./png_chunks.mjs";

const tideBinary = process.env.TIDE_BINARY || process.argv[2];
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
// TIDE_BROWSER=firefox runs the same tests in Firefox (FIREFOX, default /usr/bin/firefox-esr) over WebDriver BiDi.
const firefox = process.env.TIDE_BROWSER === "firefox";
const firefoxPath = process.env.FIREFOX || "/usr/bin/firefox-esr";
const pageOverride = process.env.TIDE_WEB_PAGE_OVERRIDE || "";
const screenshotDir = process.env.TIDE_SCREENSHOT_DIR ||
                      (tideBinary ? path.join(path.dirname(path.resolve(tideBinary)), "browser-screenshots") : "");

// Keeps what the page looked like at this point (for people reading the results, and for the README).
async function screenshot(page, name, options = {}) {
  fs.mkdirSync(screenshotDir, {recursive: true});
  await page.screenshot(Object.assign({path: path.join(screenshotDir, name + ".png")}, options));
}
// Waits are for events, never timed assertions; this bound only turns a hang into a failure on a loaded machine.
const WAIT_MS = 45_000;

let workDir, modelsDir, server, serverUrl, browser, context, downloadDir;
let generatedPng = null;  // the PNG the mouse test downloaded: the drop test drops it back onto a fresh page

// ---------------------------------------------------------------------------------------------------------------
// The server: `tide serve` on a free port (--port 0 prints the one it took), with a tiny model and a broken one.

function startServer(modelsDir, extraArgs = []) {
  const args = ["serve", "--models", modelsDir, "--model", "tiny", "--no-hf-cache", "--host", "127.0.0.1",
                "--port", "0", ...extraArgs];
  const child = spawn(tideBinary, args, {stdio: ["ignore", "pipe", "pipe"]});
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("tide serve printed no address in time:\n" + output)), WAIT_MS);
    const read = (chunk) => {
      output += chunk;
      const m = output.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolve({child, url: m[1], output: () => output}); }
    };
    child.stdout.on("data", read);
    child.stderr.on("data", read);
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`tide serve exited (${code}):\n${output}`)); });
  });
}

async function apiGet(route) {
  const response = await fetch(serverUrl + route);
  return response.json();
}

async function waitForServer(predicate, what) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const progress = await apiGet("/sdapi/v1/progress?skip_current_image=true");
    if (predicate(progress)) return progress;
    if (Date.now() > deadline) throw new Error("the server never reached: " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The page: each test opens a fresh one, collecting uncaught script errors (a silent failure is a failure).

async function openPage(viewport = {width: 1280, height: 900}, url = serverUrl, onDialog = null) {
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.setDefaultTimeout(WAIT_MS);
  await page.setViewport(viewport);
  if (pageOverride) {
    const html = fs.readFileSync(pageOverride, "utf8");
    await page.setRequestInterception(true);
    page.on("request", (request) => {
      if (new URL(request.url()).pathname === "/" && request.method() === "GET")
        request.respond({status: 200, contentType: "text/html; charset=utf-8", body: html});
      else request.continue();
    });
  }
  if (onDialog) page.on("dialog", onDialog);
  await page.goto(url + "/");
  await page.waitForFunction(() => document.getElementById("model").options.length > 0 &&
                                   document.getElementById("sampler").options.length > 0);
  return page;
}

async function closePage(page) {
  const errors = page.errors;
  await page.close();
  assert.deepEqual(errors, [], "uncaught errors in the page");
}

const text = (page, selector) => page.$eval(selector, (e) => e.textContent);
const value = (page, selector) => page.$eval(selector, (e) => e.value);

// What a user does to change a field: click into it, select what is there, type.
async function typeInto(page, selector, typed) {
  await page.click(selector);
  await selectAllAndType(page, typed);
}

async function selectAllAndType(page, typed) {
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyA");
  await page.keyboard.up("Control");
  await page.keyboard.press("Backspace");
  await page.keyboard.type(typed);
}

async function fillForm(page, {prompt, steps, width = 64, height = 64, seed, images}) {
  await typeInto(page, "#prompt", prompt);
  if (images !== undefined) await typeInto(page, "#images", String(images));
  await typeInto(page, "#steps", String(steps));
  await typeInto(page, "#width", String(width));
  await typeInto(page, "#height", String(height));
  if (seed !== undefined) {
    if (await page.$eval("#random", (e) => e.checked)) await page.click("#random");
    await typeInto(page, "#seed", String(seed));
  }
}

// Records every text #state shows and whether Generate was ever disabled, from now on.
async function recordStates(page) {
  await page.evaluate(() => {
    window.seenStates = [document.getElementById("state").textContent];
    window.sawBusy = false;
    new MutationObserver(() => {
      window.seenStates.push(document.getElementById("state").textContent);
      if (document.getElementById("go").disabled && !document.getElementById("cancel").disabled) window.sawBusy = true;
    }).observe(document.getElementById("state"), {childList: true, characterData: true, subtree: true});
  });
}

const waitIdle = (page) => page.waitForFunction(() => !document.getElementById("go").disabled &&
                                                       document.getElementById("cancel").disabled);
const galleryCount = (page) => page.$$eval("#gallery figure", (f) => f.length);

// Presses Tab until the element with this id has the focus; returns how many presses it took.
async function tabTo(page, id, limit = 30) {
  for (let presses = 1; presses <= limit; ++presses) {
    await page.keyboard.press("Tab");
    if (await page.evaluate(() => document.activeElement && document.activeElement.id) === id) return presses;
  }
  throw new Error(`#${id} never got the focus in ${limit} presses of Tab`);
}

// A 64x64 PNG drawn by the page's canvas, saved in the work folder: "mask" is white (repaint) on its left half
// and black on its right, "init" a picture of coloured blocks.
async function drawPng(page, kind) {
  const bytes = await page.evaluate(async (kind) => {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 64;
    const g = canvas.getContext("2d");
    if (kind === "mask") {
      g.fillStyle = "#000"; g.fillRect(0, 0, 64, 64);
      g.fillStyle = "#fff"; g.fillRect(0, 0, 32, 64);
    } else {
      g.fillStyle = "#2060c0"; g.fillRect(0, 0, 64, 64);
      g.fillStyle = "#e0a020"; g.fillRect(8, 24, 48, 32);
      g.fillStyle = "#c02020"; g.fillRect(20, 6, 24, 18);
    }
    const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  }, kind);
  const file = path.join(workDir, kind + ".png");
  fs.writeFileSync(file, Buffer.from(bytes));
  return file;
}

// Drops these bytes, as a file, on the element with this id (the events a user's drop fires).
async function dropOn(page, id, bytes, name) {
  await page.evaluate((id, bytes, name) => {
    const data = new DataTransfer();
    data.items.add(new File([new Uint8Array(bytes)], name, {type: "image/png"}));
    const zone = document.getElementById(id);
    for (const type of ["dragenter", "dragover", "drop"])
      zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
  }, id, Array.from(bytes), name);
}

// ---------------------------------------------------------------------------------------------------------------

before(async () => {
  assert.ok(tideBinary, "name the tide binary: TIDE_BINARY=path or the first argument");
  assert.ok(fs.existsSync(tideBinary), `no tide binary at ${tideBinary}`);
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), "tide-browser-"));
  const models = modelsDir = path.join(workDir, "models");
  fs.mkdirSync(models);
  execFileSync(tideBinary, ["make-tiny", path.join(models, "tiny")], {stdio: "pipe"});
  // A model whose UNet file is cut short: choosing it must give the user the loader's message.
  fs.cpSync(path.join(models, "tiny"), path.join(models, "zz-broken"), {recursive: true});
  const unet = path.join(models, "zz-broken", "unet");
  for (const f of fs.readdirSync(unet).filter((f) => f.endsWith(".safetensors")))
    fs.truncateSync(path.join(unet, f), 100);
  server = await startServer(models);
  // Stopped by a timeout (SIGTERM) or Ctrl+C: the server must not outlive the test.
  process.once("exit", () => server.child.kill("SIGKILL"));
  for (const signal of ["SIGTERM", "SIGINT"])
    process.once(signal, () => { console.error(`stopped by ${signal}`); process.exit(1); });
  serverUrl = server.url;
  downloadDir = path.join(workDir, "downloads");
  fs.mkdirSync(downloadDir);
  browser = firefox
    ? await puppeteer.launch({browser: "firefox", executablePath: firefoxPath, headless: true})
    : await puppeteer.launch({
        executablePath: chromiumPath, headless: true,
        args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]});
  context = await browser.createBrowserContext({downloadBehavior: {policy: "allow", downloadPath: downloadDir}});
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    const exited = new Promise((r) => server.child.once("exit", r));
    server.child.kill("SIGTERM");
    await exited;
  }
  if (workDir) fs.rmSync(workDir, {recursive: true, force: true});
});

describe("tide serve's web page", () => {
  test("lists the server's models and samplers", async () => {
    const page = await openPage();
    const models = await page.$$eval("#model option", (o) => o.map((x) => x.textContent));
    assert.deepEqual(models, ["tiny", "zz-broken"]);
    assert.equal(await value(page, "#model"), "tiny", "the server's default model is selected");
    const samplers = await page.$$eval("#sampler option", (o) => o.map((x) => x.value));
    assert.ok(samplers.includes("Euler a") && samplers.includes("DPM++ 2M"), samplers.join(", "));
    assert.equal(await value(page, "#sampler"), "DPM++ 2M");
    assert.ok((await page.$$eval("#schedule option", (o) => o.length)) > 1);
    // No --lora-dir: the LoRA picker says how to get one and cannot be used.
    assert.equal(await page.$eval("#lora", (s) => s.disabled), true);
    assert.match(await page.$eval("#lora", (s) => s.options[0].textContent), /--lora-dir/);
    assert.equal(await text(page, "#error"), "");
    await closePage(page);
  });

  test("the LoRA picker lists the server's --lora-dir files and adds a tag to the prompt", async () => {
    const loraDir = path.join(workDir, "loras");
    fs.mkdirSync(loraDir, {recursive: true});
    fs.writeFileSync(path.join(loraDir, "ink-style.safetensors"), "");  // listed by name, never loaded here
    const withLoras = await startServer(modelsDir, ["--lora-dir", loraDir]);
    try {
      const page = await openPage(undefined, withLoras.url);
      // The list arrives with the page's own request for it, after the page has loaded.
      await page.waitForFunction(() => document.querySelectorAll("#lora option").length > 0);
      assert.deepEqual(await page.$$eval("#lora option", (o) => o.map((x) => x.value)), ["", "ink-style"]);
      await typeInto(page, "#prompt", "a harbour");
      await page.select("#lora", "ink-style");
      assert.equal(await value(page, "#prompt"), "a harbour <lora:ink-style:1>");
      assert.equal(await value(page, "#lora"), "", "the picker goes back to its first entry");
      await closePage(page);
    } finally {
      const exited = new Promise((r) => withLoras.child.once("exit", r));
      withLoras.child.kill("SIGTERM");
      await exited;
    }
  });

  test("mouse: Generate shows the job's state, then an image whose PNG download carries the prompt", async () => {
    const page = await openPage();
    const prompt = "a lighthouse at dusk, browser test";
    await fillForm(page, {prompt, steps: 2, seed: 5});
    await typeInto(page, "#clipskip", "2");
    await typeInto(page, "#tome", "0.5");
    await recordStates(page);
    await page.click("#go");
    await page.waitForSelector("#gallery figure");
    await waitIdle(page);

    const states = await page.evaluate(() => window.seenStates);
    assert.ok(states.includes("Submitted."), "states seen: " + JSON.stringify(states));
    assert.ok(await page.evaluate(() => window.sawBusy), "Generate was disabled and Cancel enabled while it ran");
    assert.match(await text(page, "#state"), /^Done: 1 image\(s\)\.$/);
    await screenshot(page, "desktop-done");
    assert.equal(await page.$eval("#bar", (b) => b.value), 1);
    assert.equal(await text(page, "#error"), "");
    assert.equal(await galleryCount(page), 1);
    const caption = await text(page, "#gallery figcaption");
    assert.ok(caption.startsWith(prompt + "\n"), caption);
    assert.match(caption, /Steps: 2, Sampler: DPM\+\+ 2M.*Seed: 5, Size: 64x64, Model: tiny/);
    assert.equal(await page.$eval("#gallery img", (i) => i.complete && i.naturalWidth), 64);

    // The bytes behind the link, as the page holds them.
    const href = await page.$eval("#gallery a", (a) => a.href);
    const fromPage = Buffer.from(await page.evaluate(async (url) => {
      const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
      return Array.from(bytes);
    }, href));
    // And the file a click on "Download PNG" saves.
    assert.equal(await page.$eval("#gallery a", (a) => a.download), "tide-5.png");
    const saved = path.join(downloadDir, "tide-5.png");
    await page.click("#gallery a");
    const deadline = Date.now() + WAIT_MS;
    while (!(fs.existsSync(saved) && fs.statSync(saved).size === fromPage.length)) {
      assert.ok(Date.now() < deadline, "the download never arrived in " + downloadDir);
      await new Promise((r) => setTimeout(r, 100));
    }
    const png = fs.readFileSync(saved);
    assert.ok(png.equals(fromPage), "the saved file is the link's bytes");
    assert.deepEqual(pngSize(png), {width: 64, height: 64});
    const parameters = pngTextChunks(png).parameters;
    assert.ok(parameters, "the PNG has a `parameters` text chunk");
    assert.ok(parameters.startsWith(prompt + "\n"), parameters);
    assert.match(parameters, /Steps: 2,.*Seed: 5, Size: 64x64/);
    assert.match(parameters, /Clip skip: 2/);
    assert.match(parameters, /Token merging ratio: 0\.5/);
    generatedPng = png;
    await closePage(page);
  });

  test("Cancel stops a running job: the progress bar moves, then the page says it was cancelled", async () => {
    const page = await openPage();
    // 16 images of 150 steps: long enough on any machine that Cancel lands before the end.
    await fillForm(page, {prompt: "a long job", steps: 150, width: 128, height: 128, images: 16});
    await page.click("#go");
    await page.waitForFunction(() => /step \d+ of 150/.test(document.getElementById("state").textContent) &&
                                     document.getElementById("bar").value > 0);
    assert.equal(await page.$eval("#preview", (p) => getComputedStyle(p).display), "block", "a live preview shows");
    await screenshot(page, "desktop-running");
    await page.click("#cancel");
    await waitIdle(page);
    // A fast machine may have finished an image or two before Cancel: the page shows those, and says so.
    const state = await text(page, "#state");
    const finished = state.match(/^Cancelled(?:: no image was finished\.| after (\d+) image\(s\)\.)$/);
    assert.ok(finished, "state: " + state);
    const count = Number(finished[1] || 0);
    assert.ok(count < 16);
    assert.ok(await page.$eval("#bar", (b) => b.value) < 1, "the bar does not claim the job finished");
    assert.equal(await galleryCount(page), count);
    assert.equal(await text(page, "#error"), "");
    const progress = await apiGet("/sdapi/v1/progress?skip_current_image=true");
    assert.equal(progress.current_task, null, "the server is idle again");
    await closePage(page);
  });

  test("a job waiting behind another shows its place in the queue; Escape cancels it", async () => {
    const blocker = fetch(serverUrl + "/sdapi/v1/txt2img", {method: "POST", body: JSON.stringify(
        {prompt: "a job of another client", steps: 150, width: 128, height: 128, batch_size: 16,
         force_task_id: "blocker"})});
    try {
      await waitForServer((p) => p.current_task === "blocker", "the other client's job running");
      const page = await openPage();
      await fillForm(page, {prompt: "a queued job", steps: 2});
      await page.click("#go");
      await page.waitForFunction(() => document.getElementById("state").textContent ===
                                       "Waiting: 1 job ahead in the queue.");
      await page.keyboard.press("Escape");
      await waitIdle(page);
      assert.equal(await text(page, "#state"), "Cancelled: no image was finished.");
      assert.equal(await galleryCount(page), 0);
      const progress = await apiGet("/sdapi/v1/progress?skip_current_image=true");
      assert.equal(progress.current_task, "blocker", "only the waiting job was cancelled");
      await closePage(page);
    } finally {
      await fetch(serverUrl + "/sdapi/v1/interrupt", {method: "POST", body: JSON.stringify({id_task: "blocker"})});
      await (await blocker).json();
    }
  });

  test("keyboard only: Tab to the prompt and the fields, Enter on Generate, then Ctrl+Enter", async () => {
    const page = await openPage();
    assert.ok(await tabTo(page, "prompt") <= 2, "the prompt is near the start of the tab order");
    await page.keyboard.type("a keyboard-made fox");
    await tabTo(page, "steps");
    await selectAllAndType(page, "2");
    await tabTo(page, "width");
    await selectAllAndType(page, "64");
    await tabTo(page, "height");
    await selectAllAndType(page, "64");
    await tabTo(page, "go");
    assert.notEqual(await page.$eval("#go", (b) => getComputedStyle(b).outlineStyle), "none",
                    "the focused Generate button shows a focus ring");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.querySelectorAll("#gallery figure").length === 1);
    await waitIdle(page);
    assert.match(await text(page, "#gallery figcaption"), /^a keyboard-made fox\nSteps: 2,.*Size: 64x64/);

    await page.keyboard.down("Control");
    await page.keyboard.press("Enter");
    await page.keyboard.up("Control");
    await page.waitForFunction(() => document.querySelectorAll("#gallery figure").length === 2);
    await waitIdle(page);
    assert.match(await text(page, "#state"), /^Done: 1 image\(s\)\.$/);
    await closePage(page);
  });

  test("on a phone-sized screen nothing scrolls sideways and Generate is on screen", async () => {
    const page = await openPage({width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 3});
    const noSideScroll = () => page.evaluate(() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth}));
    let widths = await noSideScroll();
    assert.ok(widths.scroll <= widths.inner, JSON.stringify(widths));
    const go = await page.$eval("#go", (b) => {
      const r = b.getBoundingClientRect();
      return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
    });
    assert.ok(go.left >= 0 && go.right <= 390 && go.top >= 0 && go.bottom <= 844, "Generate at " + JSON.stringify(go));
    // With an image and its long caption in the gallery, still no sideways scroll.
    await fillForm(page, {prompt: "a-long-prompt-without-spaces-".repeat(4), steps: 2});
    await page.tap("#go");
    await page.waitForSelector("#gallery figure");
    await waitIdle(page);
    widths = await noSideScroll();
    assert.ok(widths.scroll <= widths.inner, "with an image: " + JSON.stringify(widths));
    await screenshot(page, "phone-done");
    await closePage(page);
  });

  test("dropping a PNG made by the page fills the form with its settings", async () => {
    assert.ok(generatedPng, "needs the PNG the mouse test downloaded");
    const page = await openPage();
    let pngInfoRequests = 0;
    page.on("request", (r) => { if (r.url().endsWith("/sdapi/v1/png-info")) ++pngInfoRequests; });
    assert.equal(await value(page, "#steps"), "20", "the form starts at its defaults");
    await page.evaluate((bytes) => {
      const file = new File([new Uint8Array(bytes)], "tide-5.png", {type: "image/png"});
      const data = new DataTransfer();
      data.items.add(file);
      const zone = document.getElementById("drop");
      for (const type of ["dragenter", "dragover", "drop"])
        zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
    }, Array.from(generatedPng));
    await page.waitForFunction(() => document.getElementById("prompt").value !== "");
    assert.equal(await value(page, "#prompt"), "a lighthouse at dusk, browser test");
    assert.equal(await value(page, "#steps"), "2");
    assert.equal(await value(page, "#width"), "64");
    assert.equal(await value(page, "#height"), "64");
    assert.equal(await value(page, "#seed"), "5");
    assert.equal(await page.$eval("#random", (c) => c.checked), false, "the seed is kept, not re-rolled");
    assert.equal(await value(page, "#sampler"), "DPM++ 2M");
    assert.equal(await value(page, "#clipskip"), "2");
    assert.equal(await value(page, "#tome"), "0.5");
    assert.equal(await value(page, "#model"), "tiny");
    assert.equal(await text(page, "#error"), "");
    assert.equal(pngInfoRequests, 1, "the dropped file is read once");
    await closePage(page);
  });

  test("image to image: a starting image and a mask from the pickers give an inpainted picture; eta and " +
       "DeepCache reach the request and its PNG", async () => {
    const page = await openPage();
    // The generation requests the page sends, as it sends them (Firefox's WebDriver BiDi gives no request bodies).
    await page.evaluate(() => {
      window.sentRequests = [];
      const fetchOriginal = window.fetch;
      window.fetch = (route, options) => {
        if (route === "/sdapi/v1/img2img" || route === "/sdapi/v1/txt2img")
          window.sentRequests.push({route, body: JSON.parse(options.body)});
        return fetchOriginal(route, options);
      };
    });
    const sentRequests = () => page.evaluate(() => window.sentRequests);
    const initFile = await drawPng(page, "init");
    const maskFile = await drawPng(page, "mask");
    await fillForm(page, {prompt: "an inpainted harbour", steps: 4, width: 128, height: 128, seed: 9});
    await page.select("#sampler", "DDIM");
    await typeInto(page, "#eta", "0.3");
    await typeInto(page, "#cache", "2");
    assert.equal(await page.$eval("#mask-file", (i) => i.disabled), true, "no mask before a starting image");
    // The pickers are labelled and in the tab order.
    assert.equal(await page.$eval("#init-file", (i) => i.labels[0].textContent.trim()), "choose the starting image");
    assert.equal(await page.$eval("#mask-file", (i) => i.labels[0].textContent.trim()), "choose the mask");
    assert.match(await page.$eval("#init-zone", (z) => z.textContent), /starting image/);
    assert.equal(await page.$eval("#strength", (i) => i.labels[0].textContent), "Denoising strength");
    assert.match(await page.$eval("#eta", (i) => document.getElementById(i.getAttribute("aria-describedby")).textContent),
                 /DDIM/);
    assert.match(await page.$eval("#cache", (i) => document.getElementById(i.getAttribute("aria-describedby")).textContent),
                 /1 = off/);

    await (await page.$("#init-file")).uploadFile(initFile);
    await page.waitForFunction(() => !document.getElementById("init-picked").hidden);
    assert.match(await text(page, "#init-name"), /^init\.png \(64x64\)$/);
    assert.equal(await page.$eval("#init-thumb", (i) => i.naturalWidth), 64);
    assert.equal(await value(page, "#width"), "64", "the picture takes the starting image's size");
    assert.equal(await value(page, "#height"), "64");
    assert.equal(await page.$eval("#mask-file", (i) => i.disabled), false);
    await (await page.$("#mask-file")).uploadFile(maskFile);
    await page.waitForFunction(() => !document.getElementById("mask-picked").hidden);
    await typeInto(page, "#strength", "0.6");
    await typeInto(page, "#maskblur", "2");
    await page.click("#go");
    await page.waitForSelector("#gallery figure");
    await waitIdle(page);
    assert.equal(await text(page, "#error"), "");
    assert.match(await text(page, "#state"), /^Done: 1 image\(s\)\.$/);
    await screenshot(page, "desktop-img2img", {fullPage: true});  // the form is longer than the window

    let sent = await sentRequests();
    assert.equal(sent.length, 1);
    const body = sent[0].body;
    assert.equal(sent[0].route, "/sdapi/v1/img2img");
    assert.equal(body.init_images.length, 1);
    assert.equal(Buffer.from(body.init_images[0].replace(/^data:image\/png;base64,/, ""), "base64").toString("hex"),
                 fs.readFileSync(initFile).toString("hex"), "the starting image is sent as chosen");
    assert.equal(Buffer.from(body.mask.replace(/^data:image\/png;base64,/, ""), "base64").toString("hex"),
                 fs.readFileSync(maskFile).toString("hex"));
    assert.equal(body.denoising_strength, 0.6);
    assert.equal(body.mask_blur, 2);
    assert.equal(body.inpainting_mask_invert, 0);
    assert.equal(body.eta, 0.3);
    assert.equal(body.tide_cache_interval, 2);
    assert.equal(body.sampler_name, "DDIM");

    // The picture's PNG, as the download link holds it, records what was asked.
    const href = await page.$eval("#gallery a", (a) => a.href);
    const png = Buffer.from(await page.evaluate(async (url) =>
      Array.from(new Uint8Array(await (await fetch(url)).arrayBuffer())), href));
    assert.deepEqual(pngSize(png), {width: 64, height: 64});
    const parameters = pngTextChunks(png).parameters;
    assert.ok(parameters.startsWith("an inpainted harbour\n"), parameters);
    assert.match(parameters, /Steps: 4, Sampler: DDIM,.*Seed: 9, Size: 64x64/);
    assert.match(parameters, /Eta: 0\.3/);
    assert.match(parameters, /DeepCache interval: 2/);
    assert.match(parameters, /Denoising strength: 0\.6/);
    assert.match(parameters, /Mask blur: 2/);
    assert.match(await text(page, "#gallery figcaption"), /Denoising strength: 0\.6/);

    // On a phone-wide window, with both pictures chosen, nothing scrolls sideways. (Without isMobile, which would
    // reload the page and lose them.)
    await page.setViewport({width: 390, height: 844});
    assert.equal(await page.$eval("#mask-picked", (m) => m.hidden), false, "the page kept its pictures");
    const widths = await page.evaluate(() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth}));
    assert.ok(widths.scroll <= widths.inner, JSON.stringify(widths));
    await page.setViewport({width: 1280, height: 900});

    // A PNG with settings dropped on the starting image's zone becomes the starting image; the form keeps its
    // settings and nothing asks the server for the PNG's parameters.
    let pngInfoRequests = 0;
    page.on("request", (r) => { if (r.url().endsWith("/sdapi/v1/png-info")) ++pngInfoRequests; });
    await typeInto(page, "#prompt", "a second harbour");
    await dropOn(page, "init-zone", png, "result.png");
    await page.waitForFunction(() => document.getElementById("init-name").textContent.startsWith("result.png"));
    assert.equal(await value(page, "#prompt"), "a second harbour");
    assert.equal(pngInfoRequests, 0);
    assert.equal(await page.$eval("#mask-picked", (m) => m.hidden), false, "the mask stays");

    // Remove (reached by Tab, pressed with Enter): the starting image and its mask go, the focus lands on the
    // picker, and Generate is text to image again. Firefox under WebDriver BiDi does not turn synthetic Enter or
    // Space on a type=button into a click (Tab works): there the button is clicked.
    await page.focus("#strength");
    await tabTo(page, "init-clear");
    if (firefox) await page.click("#init-clear");
    else await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.getElementById("init-picked").hidden);
    assert.equal(await page.$eval("#mask-picked", (m) => m.hidden), true);
    assert.equal(await page.$eval("#mask-file", (i) => i.disabled), true);
    assert.equal(await page.evaluate(() => document.activeElement.id), "init-file");
    await page.click("#go");
    await page.waitForFunction(() => document.querySelectorAll("#gallery figure").length === 2);
    await waitIdle(page);
    sent = await sentRequests();
    assert.equal(sent.length, 2);
    assert.equal(sent[1].route, "/sdapi/v1/txt2img");
    assert.equal(sent[1].body.init_images, undefined);
    await closePage(page);

    // The picture dropped on the settings zone of a fresh page fills eta, DeepCache and the strength.
    const fresh = await openPage();
    await dropOn(fresh, "drop", png, "result.png");
    await fresh.waitForFunction(() => document.getElementById("prompt").value !== "");
    assert.equal(await value(fresh, "#prompt"), "an inpainted harbour");
    assert.equal(await value(fresh, "#sampler"), "DDIM");
    assert.equal(await value(fresh, "#eta"), "0.3");
    assert.equal(await value(fresh, "#cache"), "2");
    assert.equal(await value(fresh, "#strength"), "0.6");
    assert.equal(await value(fresh, "#maskblur"), "2");
    assert.equal(await fresh.$eval("#init-picked", (m) => m.hidden), true, "settings are not a starting image");
    await closePage(fresh);
  });

  test("a starting image that is no PNG or JPEG, or a mask before a starting image, says so", async () => {
    const page = await openPage();
    await page.evaluate(() => {
      const data = new DataTransfer();
      data.items.add(new File(["GIF89a"], "anim.gif", {type: "image/gif"}));
      document.getElementById("init-zone").dispatchEvent(
          new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    });
    await page.waitForFunction(() => document.getElementById("error").textContent !== "");
    assert.match(await text(page, "#error"), /^Cannot use anim\.gif as the starting image: it is not a PNG or JPEG/);
    assert.equal(await page.$eval("#init-picked", (m) => m.hidden), true);
    await dropOn(page, "mask-zone", Buffer.from(generatedPng || []), "mask.png");
    await page.waitForFunction(() => /before its mask/.test(document.getElementById("error").textContent));
    assert.equal(await page.$eval("#mask-picked", (m) => m.hidden), true);
    await closePage(page);
  });

  test("dropping a PNG without settings, or a file that is no PNG, says so", async () => {
    const page = await openPage();
    const dropFile = (kind) => page.evaluate(async (kind) => {
      let file;
      if (kind === "plain png") {
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 8;
        const blob = await new Promise((r) => canvas.toBlob(r, "image/png"));
        file = new File([blob], "plain.png", {type: "image/png"});
      } else {
        file = new File(["just some notes"], "notes.txt", {type: "text/plain"});
      }
      document.getElementById("error").textContent = "";
      const data = new DataTransfer();
      data.items.add(file);
      document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    }, kind);
    await dropFile("plain png");
    await page.waitForFunction(() => document.getElementById("error").textContent !== "");
    assert.match(await text(page, "#error"), /plain\.png.*no generation settings/);
    await dropFile("text");
    await page.waitForFunction(() => document.getElementById("error").textContent !== "");
    assert.match(await text(page, "#error"), /^Cannot take the settings of notes\.txt: 422: .*PNG/);
    assert.equal(await value(page, "#prompt"), "", "the form is left as it was");
    await closePage(page);
  });

  test("bad requests and failures show a readable message", async () => {
    const page = await openPage();
    let generateRequests = 0;
    page.on("request", (r) => { if (r.url().endsWith("/sdapi/v1/txt2img")) ++generateRequests; });

    // Steps 0: the form refuses it before anything is sent, and focuses the field.
    await fillForm(page, {prompt: "zero steps", steps: 0});
    await page.click("#go");
    assert.equal(await page.evaluate(() => document.activeElement.id), "steps");
    assert.ok(await page.$eval("#steps", (s) => s.validity.rangeUnderflow && s.validationMessage !== ""));
    assert.equal(generateRequests, 0);

    // A size beyond the server's limit: the server's 422 is shown as text.
    await fillForm(page, {prompt: "too wide", steps: 2, width: 4000});
    await page.click("#go");
    await page.waitForFunction(() => document.getElementById("error").textContent !== "");
    await waitIdle(page);
    assert.equal(await text(page, "#state"), "Failed.");
    assert.match(await text(page, "#error"), /^422: width: width must be between 1 and 2048, got 4000$/);
    assert.equal(await page.$eval("#error", (e) => e.getAttribute("role")), "alert");

    // A model whose files are damaged: the loader's message reaches the user.
    await typeInto(page, "#width", "64");
    await page.select("#model", "zz-broken");
    await page.click("#go");
    await page.waitForFunction(() => /zz-broken/.test(document.getElementById("error").textContent));
    await waitIdle(page);
    assert.equal(await text(page, "#state"), "Failed.");
    assert.match(await text(page, "#error"), /^422: .*zz-broken.*unet.*safetensors.*truncated/);

    // The server unreachable: said in words, not a silent stop.
    await page.select("#model", "tiny");
    await page.setOfflineMode(true);
    await page.click("#go");
    await page.waitForFunction(() => /^Cannot reach the server/.test(document.getElementById("error").textContent));
    await waitIdle(page);
    assert.equal(await text(page, "#state"), "Failed.");
    await page.setOfflineMode(false);

    // And the page recovers: the next Generate works.
    await page.click("#go");
    await page.waitForSelector("#gallery figure");
    assert.equal(await text(page, "#error"), "");
    await closePage(page);
  });

  test("a server with an API key: the page asks for it (again after a wrong one), keeps it, and works", async () => {
    const keyFile = path.join(workDir, "api-key");
    fs.writeFileSync(keyFile, "browser-test-key\n");
    const keyed = await startServer(modelsDir, ["--api-key-file", keyFile]);
    try {
      const asked = [];
      // The first answer is wrong: the page must ask once more, not once per request it sent.
      const page = await openPage(undefined, keyed.url, (dialog) => {
        asked.push(dialog.type() + ": " + dialog.message());
        dialog.accept(asked.length === 1 ? "a-wrong-key" : "browser-test-key");
      });
      assert.deepEqual(await page.$$eval("#model option", (o) => o.map((x) => x.textContent)), ["tiny", "zz-broken"]);
      assert.deepEqual(asked, Array(2).fill("prompt: This server needs an API key:"));
      const askedBefore = asked.length;
      await fillForm(page, {prompt: "a keyed fox", steps: 2});
      await page.click("#go");
      await page.waitForSelector("#gallery figure");
      await waitIdle(page);
      assert.equal(asked.length, askedBefore, "the key is kept: no more questions");
      assert.equal(await page.evaluate(() => localStorage.getItem("tide-api-key")), "browser-test-key");
      assert.equal(await text(page, "#error"), "");
      await closePage(page);
    } finally {
      const exited = new Promise((r) => keyed.child.once("exit", r));
      keyed.child.kill("SIGTERM");
      await exited;
    }
  });
});
