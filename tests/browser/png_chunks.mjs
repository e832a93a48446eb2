// Reads what the browser tests check in a PNG file: its size (IHDR) and its text chunks (tEXt, uncompressed
// iTXt), e.g. the `parameters` infotext tide writes. Checks the signature and every chunk's CRC on the way.
const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

// CRC-32 of PNG chunks (zlib's; written out because node:zlib has crc32 only from Node 20.15).
const CRC_TABLE = Array.from({length: 256}, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function* chunks(png) {
  if (!png.subarray(0, 8).equals(SIGNATURE)) throw new Error("not a PNG: the signature is missing");
  let at = 8;
  while (at + 12 <= png.length) {
    const length = png.readUInt32BE(at);
    const type = png.toString("latin1", at + 4, at + 8);
    if (at + 12 + length > png.length) throw new Error(`PNG chunk ${type} runs past the end of the file`);
    const data = png.subarray(at + 8, at + 8 + length);
    const crc = png.readUInt32BE(at + 8 + length);
    if (crc32(png.subarray(at + 4, at + 8 + length)) !== crc) throw new Error(`PNG chunk ${type}: bad CRC`);
    yield {type, data};
    if (type === "IEND") return;
    at += 12 + length;
  }
  throw new Error("PNG without IEND");
}

export function pngSize(png) {
  for (const {type, data} of chunks(png))
    if (type === "IHDR") return {width: data.readUInt32BE(0), height: data.readUInt32BE(4)};
  throw new Error("PNG without IHDR");
}

// keyword -> text of every tEXt and uncompressed iTXt chunk.
export function pngTextChunks(png) {
  const out = {};
  for (const {type, data} of chunks(png)) {
    const nul = data.indexOf(0);
    if (type === "tEXt") {
      out[data.toString("latin1", 0, nul)] = data.toString("latin1", nul + 1);
    } else if (type === "iTXt" && data[nul + 1] === 0) {
      // keyword NUL compression-flag compression-method language NUL translated-keyword NUL text
      const language = data.indexOf(0, nul + 3);
      const translated = data.indexOf(0, language + 1);
      out[data.toString("latin1", 0, nul)] = data.toString("utf8", translated + 1);
    }
  }
  return out;
}
