// AudioWorklet processor: microphone samples in, 16-bit little-endian PCM chunks out.
// It averages the input down to `targetRate` (a box filter, enough for speech) and posts one
// ArrayBuffer of `chunkMs` milliseconds at a time to the page, which sends it over the WebSocket.
class PcmS16Processor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.ratio = sampleRate / this.targetRate; // sampleRate: the AudioContext's rate (a global here)
    this.chunk = Math.round((this.targetRate * (opts.chunkMs || 100)) / 1000);
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
    this.phase = 0;
    this.sum = 0;
    this.count = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const channels = input.length;
      const frames = input[0].length;
      for (let i = 0; i < frames; i++) {
        let value = 0;
        for (let c = 0; c < channels; c++) value += input[c][i];
        this.sum += value / channels;
        this.count += 1;
        this.phase += 1;
        if (this.phase >= this.ratio) {
          this.phase -= this.ratio;
          this.emit(this.sum / this.count);
          this.sum = 0;
          this.count = 0;
        }
      }
    }
    return true;
  }

  emit(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.buffer[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === this.chunk) {
      this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
      this.buffer = new Int16Array(this.chunk);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm-s16le", PcmS16Processor);
