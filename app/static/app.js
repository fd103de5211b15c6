// The demo page: upload a file to POST /transcribe, or stream the microphone over WS /stream.
const TARGET_RATE = 16000;
const $ = (id) => document.getElementById(id);

// With API keys set on the server, uploads send the key as a bearer header; a browser cannot set
// headers on a WebSocket, so streams offer it as the subprotocol "bearer.<key>" next to "asr".
function apiKey() {
  return $("api-key").value.trim();
}

// Names and terms to spell as written: the second pass reads them first, as its prompt.
function prompt() {
  return $("prompt").value.trim();
}

function formatTime(seconds) {
  return seconds.toFixed(1).padStart(5, " ") + " s";
}

// ---- Upload -----------------------------------------------------------------------------------

async function transcribeFile(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    $("upload-status").textContent = "Choose an audio file first.";
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if (prompt()) form.append("prompt", prompt());
  $("upload-status").textContent = "Transcribing…";
  $("upload-result").textContent = "";
  try {
    const headers = apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
    const response = await fetch("/transcribe", { method: "POST", body: form, headers });
    const body = await response.json();
    if (!response.ok) {
      $("upload-status").textContent = `Error ${response.status}: ${body.error ? body.error.message : "failed"}`;
      return;
    }
    $("upload-status").textContent = `${body.duration.toFixed(1)} s of audio in ${Math.round(body.processing_ms)} ms`;
    $("upload-result").textContent = body.text || "(no speech recognised)";
  } catch (err) {
    $("upload-status").textContent = `Error: ${err}`;
  }
}

// ---- Microphone streaming ---------------------------------------------------------------------

class MicrophoneStream {
  constructor(onMessage, onClose) {
    this.onMessage = onMessage;
    this.onClose = onClose;
  }

  async start() {
    this.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    this.context = await this.createContext();
    const rate = Math.min(TARGET_RATE, this.context.sampleRate);
    await this.context.audioWorklet.addModule("/static/pcm-worklet.js");
    this.socket = await this.connect({
      type: "config",
      sample_rate: rate,
      encoding: "pcm_s16le",
      interim_results: true,
      word_timestamps: true,
      ...(prompt() ? { decoding: { prompt: prompt() } } : {}),
    });
    const source = this.context.createMediaStreamSource(this.media);
    this.node = new AudioWorkletNode(this.context, "pcm-s16le", {
      processorOptions: { targetRate: rate, chunkMs: 100 },
    });
    this.node.port.onmessage = (event) => {
      if (this.socket.readyState === WebSocket.OPEN) this.socket.send(event.data);
    };
    source.connect(this.node);
    this.node.connect(this.context.destination); // keeps the node pulled; it outputs silence
  }

  async createContext() {
    try {
      return new AudioContext({ sampleRate: TARGET_RATE }); // the browser resamples the microphone
    } catch (err) {
      return new AudioContext(); // the worklet resamples instead
    }
  }

  connect(config) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = apiKey() ? ["asr", `bearer.${apiKey()}`] : [];
    const socket = new WebSocket(`${scheme}//${location.host}/stream`, protocols);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.onMessage(JSON.parse(event.data));
    socket.onclose = (event) => {
      this.release();
      this.onClose(event);
    };
    return new Promise((resolve, reject) => {
      socket.onopen = () => {
        socket.send(JSON.stringify(config));
        resolve(socket);
      };
      socket.onerror = () => reject(new Error("cannot connect to /stream"));
    });
  }

  stop() {
    this.release();
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "eof" })); // the server sends the last final, then closes
    }
  }

  release() {
    if (this.media) this.media.getTracks().forEach((track) => track.stop());
    if (this.context && this.context.state !== "closed") this.context.close();
    this.media = null;
    this.context = null;
  }
}

let microphone = null;

function showMessage(message) {
  if (message.type === "partial") {
    $("partial").textContent = message.text;
  } else if (message.type === "final") {
    $("partial").textContent = "";
    if (!message.text) return;
    const line = document.createElement("div");
    line.className = "final";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = formatTime(message.start);
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = message.text;
    line.append(time, text);
    $("transcript").append(line);
  } else if (message.type === "error") {
    $("mic-status").textContent = `error: ${message.message}`;
    $("mic-status").classList.add("error");
  }
}

function streamClosed(event) {
  $("start").disabled = false;
  $("stop").disabled = true;
  if (!$("mic-status").classList.contains("error")) {
    $("mic-status").textContent = `closed (${event.code})`;
  }
  microphone = null;
}

async function startMicrophone() {
  $("start").disabled = true;
  $("mic-status").classList.remove("error");
  $("mic-status").textContent = "starting…";
  microphone = new MicrophoneStream(showMessage, streamClosed);
  try {
    await microphone.start();
    $("mic-status").textContent = "listening";
    $("stop").disabled = false;
  } catch (err) {
    microphone.release();
    microphone = null;
    $("start").disabled = false;
    $("mic-status").textContent = `cannot start: ${err.message || err}`;
    $("mic-status").classList.add("error");
  }
}

function stopMicrophone() {
  $("stop").disabled = true;
  $("mic-status").textContent = "finishing…";
  if (microphone) microphone.stop();
}

// getUserMedia exists only in a secure context (https://, or http://localhost); elsewhere
// navigator.mediaDevices is undefined. Say so, and how to reach the page securely, up front.
function microphoneAvailable() {
  return window.isSecureContext && Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function explainInsecurePage() {
  const port = location.port || (location.protocol === "https:" ? "443" : "80");
  $("page-origin").textContent = location.origin;
  $("tunnel-command").textContent = `ssh -L ${port}:localhost:${port} user@${location.hostname}`;
  $("tunnel-link").href = `http://localhost:${port}${location.pathname}`;
  $("tunnel-link").textContent = $("tunnel-link").href;
  $("mic-insecure").hidden = false;
  $("start").disabled = true;
  $("mic-status").textContent = "microphone unavailable: this page is not secure (see below)";
  $("mic-status").classList.add("error");
}

if (!microphoneAvailable()) explainInsecurePage();
$("upload-form").addEventListener("submit", transcribeFile);
$("start").addEventListener("click", startMicrophone);
$("stop").addEventListener("click", stopMicrophone);
