/* cloudfilm decode worker: compressed DICOM frames to native samples, off the main thread.

   pixels.js posts {id, ts, bytes (ArrayBuffer), h: {rows, cols, samples, bitsAllocated, photometric},
   codecs: "/codecs/" | null} and gets back {id, buffer, bits, photometric, planar} or {id, error}.
   The decoders are the WebAssembly builds fetched by scripts/fetch_codecs.sh and served by the archive
   at /codecs/ (nothing is fetched from elsewhere); RLE (PS3.5 Annex G) is decoded here.

     1.2.840.10008.1.2.4.50           JPEG baseline           libjpeg-turbo   (@cornerstonejs/codec-libjpeg-turbo-8bit)
     1.2.840.10008.1.2.4.57 / .70     JPEG lossless           jpeg-lossless-decoder-js
     1.2.840.10008.1.2.4.80 / .81     JPEG-LS                 CharLS          (@cornerstonejs/codec-charls)
     1.2.840.10008.1.2.4.90 / .91     JPEG 2000 part 1        OpenJPEG        (@cornerstonejs/codec-openjpeg)
     1.2.840.10008.1.2.4.201-.203     HTJ2K                   OpenJPH         (@cornerstonejs/codec-openjph)
     1.2.840.10008.1.2.5              RLE lossless            this file

   Anything else (12-bit JPEG .51, JPEG 2000 part 2 .92/.93...) is refused: the viewer keeps the
   server's rendered JPEG for it. */
"use strict";

/* syntax -> [codec script, its global factory, decoder class] (lossless.js is an ES module). */
const WASM = {
  jpeg: ["libjpegturbowasm_decode", "libjpegturbowasm_decode", "JPEGDecoder"],
  jpegls: ["charlswasm_decode", "CharLSWASM", "JpegLSDecoder"],
  j2k: ["openjpegwasm_decode", "OpenJPEGWASM", "J2KDecoder"],
  htj2k: ["openjphjs", "Module", "HTJ2KDecoder"],
};
const FAMILY = {
  "1.2.840.10008.1.2.4.50": "jpeg",
  "1.2.840.10008.1.2.4.57": "lossless",
  "1.2.840.10008.1.2.4.70": "lossless",
  "1.2.840.10008.1.2.4.80": "jpegls",
  "1.2.840.10008.1.2.4.81": "jpegls",
  "1.2.840.10008.1.2.4.90": "j2k",
  "1.2.840.10008.1.2.4.91": "j2k",
  "1.2.840.10008.1.2.4.201": "htj2k",
  "1.2.840.10008.1.2.4.202": "htj2k",
  "1.2.840.10008.1.2.4.203": "htj2k",
  "1.2.840.10008.1.2.5": "rle",
};

const modules = new Map();   // family -> Promise<module>

function load(family, codecs) {
  let p = modules.get(family);
  if (!p) {
    p = (async function () {
      if (!codecs) throw new Error("the decoders are not installed");
      if (family === "lossless") return import(codecs + "lossless.js");
      const [file, global, _cls] = WASM[family];
      importScripts(codecs + file + ".js");
      const factory = self[global];
      if (typeof factory !== "function") throw new Error(file + ".js defines no " + global);
      return factory({ locateFile: function (path) { return codecs + path; } });
    })();
    p.catch(function () { modules.delete(family); });
    modules.set(family, p);
  }
  return p;
}

/** Native samples of bitsAllocated bits (a copy, so its buffer can be transferred). */
function widen(bytes, n, bits) {
  if (bits === 8) return bytes.slice(0, n);
  if (bytes.length >= 2 * n) return new Uint16Array(bytes.slice(0, 2 * n).buffer);
  const out = new Uint16Array(n);   // an 8-bit codestream in 16-bit samples
  for (let i = 0; i < n; i++) out[i] = bytes[i];
  return out;
}

function wasmDecode(mod, family, bytes, h) {
  const decoder = new mod[WASM[family][2]]();
  try {
    decoder.getEncodedBuffer(bytes.length).set(bytes);
    decoder.decode();
    const info = decoder.getFrameInfo();
    const out = decoder.getDecodedBuffer();
    const samples = info.componentCount || h.samples;
    const n = h.rows * h.cols * samples;
    const bits = h.bitsAllocated === 8 && info.bitsPerSample <= 8 ? 8 : 16;
    let planar = 0;
    if (family === "jpegls" && samples === 3 && decoder.getInterleaveMode() === 0) planar = 1;
    // libjpeg-turbo and OpenJPEG/OpenJPH give colour as RGB (the YCbCr / ICT / RCT transform undone).
    const photometric = samples === 3 && family !== "jpegls" ? "RGB" : h.photometric;
    return { pixels: widen(new Uint8Array(out.buffer, out.byteOffset, out.byteLength), n, bits), bits: bits,
             photometric: photometric, planar: planar };
  } finally {
    decoder.delete();
  }
}

function losslessDecode(mod, bytes, h) {
  const bytesPer = h.bitsAllocated <= 8 ? 1 : 2;
  const out = new mod.Decoder().decode(bytes.buffer, bytes.byteOffset, bytes.length, bytesPer);
  const n = h.rows * h.cols * h.samples;
  const pixels = bytesPer === 1 ? new Uint8Array(out.buffer, out.byteOffset, n).slice()
                                : new Uint16Array(out.buffer, out.byteOffset, n).slice();
  return { pixels: pixels, bits: bytesPer * 8, photometric: h.photometric, planar: 0 };
}

/** RLE Lossless (PS3.5 Annex G): one PackBits segment per byte plane, most significant byte first. */
function rleDecode(bytes, h) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = view.getUint32(0, true);
  const bytesPer = h.bitsAllocated / 8, n = h.rows * h.cols;
  if (count !== bytesPer * h.samples) throw new Error("RLE: " + count + " segments for " + h.samples + "x" + bytesPer + " byte planes");
  const out = new Uint8Array(n * h.samples * bytesPer);
  for (let seg = 0; seg < count; seg++) {
    const start = view.getUint32(4 + 4 * seg, true);
    const end = seg + 1 < count ? view.getUint32(8 + 4 * seg, true) : bytes.length;
    const sample = Math.floor(seg / bytesPer), byte = bytesPer - 1 - (seg % bytesPer);  // little endian out
    let o = sample * n, i = start;
    const stop = o + n;
    while (i < end && o < stop) {
      const c = bytes[i++];
      if (c < 128) {                       // literal run of c + 1 bytes
        for (let k = 0; k <= c && o < stop; k++) out[(o++) * bytesPer + byte] = bytes[i++];
      } else if (c > 128) {                // replicate the next byte 257 - c times
        const v = bytes[i++];
        for (let k = 0; k < 257 - c && o < stop; k++) out[(o++) * bytesPer + byte] = v;
      }                                    // 128: no operation
    }
    if (o !== stop) throw new Error("RLE: segment " + seg + " is short");
  }
  const pixels = bytesPer === 1 ? out : bytesPer === 2 ? new Uint16Array(out.buffer) : new Uint32Array(out.buffer);
  return { pixels: pixels, bits: bytesPer * 8, photometric: h.photometric, planar: h.samples === 3 ? 1 : 0 };
}

async function decode(msg) {
  const family = FAMILY[msg.ts];
  if (!family) throw new Error("no decoder for transfer syntax " + msg.ts);
  const bytes = new Uint8Array(msg.bytes);
  if (family === "rle") return rleDecode(bytes, msg.h);
  if (family === "jpeg" && msg.h.bitsAllocated !== 8) throw new Error("JPEG baseline with " + msg.h.bitsAllocated + "-bit samples");
  const mod = await load(family, msg.codecs);
  return family === "lossless" ? losslessDecode(mod, bytes, msg.h) : wasmDecode(mod, family, bytes, msg.h);
}

/* One frame at a time, in the order asked, each answered before the next starts: the frame on screen
   (asked first) is not held back by prefetched ones that arrived while its decoder was loading. */
let chain = Promise.resolve();
self.onmessage = function (event) {
  const msg = event.data;
  chain = chain.then(function () {
    const t0 = performance.now();
    return decode(msg).then(function (r) {
      const buffer = r.pixels.buffer;
      self.postMessage({ id: msg.id, buffer: buffer, bits: r.bits, photometric: r.photometric, planar: r.planar,
                         ms: performance.now() - t0 }, [buffer]);
    }).catch(function (err) {
      self.postMessage({ id: msg.id, error: String(err && err.message || err) });
    });
  });
};
