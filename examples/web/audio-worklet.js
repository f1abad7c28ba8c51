// AudioWorklet for the microphone: a level meter (every 20 ms) and, for the ws fallback, 16 kHz
// mono PCM16 frames of 20 ms resampled from the AudioContext's own rate.
//
// Resampling: a windowed-sinc low-pass (cut-off just under the output Nyquist) on the input,
// then linear interpolation at the fractional input positions of the output samples.

class RoomscribeMic extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.pcm = !!o.pcm;
    this.outRate = o.targetRate || 16000;
    this.frameSamples = Math.round((this.outRate * (o.frameMs || 20)) / 1000);
    this.inRate = sampleRate; // the AudioContext's rate (global in AudioWorkletGlobalScope)
    this.step = this.inRate / this.outRate;

    // Low-pass FIR for downsampling (none when the rates match or we upsample).
    if (this.step > 1.0001) {
      const taps = 2 * Math.ceil(12 * this.step) + 1;
      const fc = (0.5 / this.step) * 0.92; // cycles per input sample
      const m = (taps - 1) / 2;
      const h = new Float32Array(taps);
      let sum = 0;
      for (let k = 0; k < taps; k++) {
        const x = k - m;
        const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
        const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * k) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * k) / (taps - 1));
        h[k] = sinc * w;
        sum += h[k];
      }
      for (let k = 0; k < taps; k++) h[k] /= sum;
      this.h = h;
    } else {
      this.h = new Float32Array([1]);
    }
    this.m = (this.h.length - 1) / 2;
    this.buf = new Float32Array(16384);
    this.len = 0;
    this.pos = this.m; // next output position, in input samples from buf[0]
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;

    this.levelEvery = Math.round(this.inRate * 0.02);
    this.levelCount = 0;
    this.levelSum = 0;
    this.levelPeak = 0;

    this.port.onmessage = (ev) => {
      if (ev.data && typeof ev.data.pcm === 'boolean') this.pcm = ev.data.pcm;
    };
  }

  filtered(i) {
    const h = this.h;
    const buf = this.buf;
    const base = i - this.m;
    let acc = 0;
    for (let k = 0; k < h.length; k++) acc += h[k] * buf[base + k];
    return acc;
  }

  pushPcm(input) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    // Produce every output sample whose filter window is complete.
    while (Math.floor(this.pos) + 1 + this.m < this.len) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      let y = this.filtered(i);
      if (frac > 0) y += frac * (this.filtered(i + 1) - y);
      const s = Math.max(-1, Math.min(1, y));
      this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
      if (this.filled === this.frameSamples) {
        const out = this.frame;
        this.port.postMessage({ type: 'pcm', buffer: out.buffer }, [out.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
      }
      this.pos += this.step;
    }
    // Drop input no longer needed (keep the filter's history).
    const drop = Math.floor(this.pos) - this.m;
    if (drop > 4096) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true;
    const n = input[0].length;
    let mono = input[0];
    if (input.length > 1) {
      mono = new Float32Array(n);
      for (let c = 0; c < input.length; c++) {
        const ch = input[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
      }
    }
    for (let i = 0; i < n; i++) {
      const v = mono[i];
      this.levelSum += v * v;
      const a = v < 0 ? -v : v;
      if (a > this.levelPeak) this.levelPeak = a;
      if (++this.levelCount >= this.levelEvery) {
        this.port.postMessage({ type: 'level', rms: Math.sqrt(this.levelSum / this.levelCount), peak: this.levelPeak });
        this.levelCount = 0;
        this.levelSum = 0;
        this.levelPeak = 0;
      }
    }
    if (this.pcm) this.pushPcm(mono);
    return true;
  }
}

registerProcessor('roomscribe-mic', RoomscribeMic);
