// Encrypted attachments (Matrix spec "Sending encrypted attachments"):
// AES-CTR-256 with a random key, the counter half of the IV zero, and the
// SHA-256 of the ciphertext; the server only ever sees ciphertext.
import type { MatrixClient } from "matrix-js-sdk";

export interface EncryptedFile {
  url: string;
  key: JsonWebKey & { key_ops: string[]; alg: string; ext: boolean; kty: string; k: string };
  iv: string;
  hashes: { sha256: string };
  v: "v2";
}

function b64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s).replace(/=+$/, "");
}

function unb64(s: string): Uint8Array {
  const std = s.replace(/-/g, "+").replace(/_/g, "/");
  const pad = std + "===".slice((std.length + 3) % 4);
  const bin = atob(pad);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export async function encryptAttachment(
  data: ArrayBuffer,
): Promise<{ data: ArrayBuffer; info: Omit<EncryptedFile, "url"> }> {
  const ivBytes = new Uint8Array(16);
  crypto.getRandomValues(ivBytes.subarray(0, 8)); // counter half stays zero
  const key = await crypto.subtle.generateKey({ name: "AES-CTR", length: 256 }, true, ["encrypt", "decrypt"]);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const cipher = await crypto.subtle.encrypt({ name: "AES-CTR", counter: ivBytes, length: 64 }, key, data);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", cipher));
  return {
    data: cipher,
    info: {
      key: {
        kty: "oct",
        key_ops: ["encrypt", "decrypt"],
        alg: "A256CTR",
        k: jwk.k!,
        ext: true,
      },
      iv: b64(ivBytes),
      hashes: { sha256: b64(digest) },
      v: "v2",
    },
  };
}

export async function decryptAttachment(cipher: ArrayBuffer, file: EncryptedFile): Promise<ArrayBuffer> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", cipher));
  if (!file.hashes?.sha256 || b64(digest) !== file.hashes.sha256.replace(/=+$/, "")) {
    throw new Error("The attachment does not match its hash");
  }
  const key = await crypto.subtle.importKey("jwk", { ...file.key, key_ops: ["encrypt", "decrypt"] }, "AES-CTR", false, [
    "decrypt",
  ]);
  const iv = unb64(file.iv);
  return crypto.subtle.decrypt({ name: "AES-CTR", counter: iv as BufferSource, length: 64 }, key, cipher);
}

/** Downloads media with the access token (authenticated media, v1). */
export async function fetchMedia(mx: MatrixClient, mxc: string): Promise<ArrayBuffer> {
  const url = mx.mxcUrlToHttp(mxc, undefined, undefined, undefined, false, true, true);
  if (!url) throw new Error("Bad media address");
  const resp = await fetch(url, { headers: { Authorization: `Bearer ${mx.getAccessToken()}` } });
  if (!resp.ok) throw new Error(`Download failed (${resp.status})`);
  return resp.arrayBuffer();
}

const cache = new Map<string, Promise<string>>();

/** An object URL for a message's media, decrypting when it is encrypted. */
export function mediaObjectUrl(
  mx: MatrixClient,
  content: { url?: string; file?: EncryptedFile; info?: { mimetype?: string } },
): Promise<string> {
  const key = content.file?.url || content.url || "";
  let p = cache.get(key);
  if (!p) {
    p = (async () => {
      const mime = content.info?.mimetype || "application/octet-stream";
      if (content.file) {
        const plain = await decryptAttachment(await fetchMedia(mx, content.file.url), content.file);
        return URL.createObjectURL(new Blob([plain], { type: mime }));
      }
      if (content.url) {
        return URL.createObjectURL(new Blob([await fetchMedia(mx, content.url)], { type: mime }));
      }
      throw new Error("No media in this message");
    })();
    p.catch(() => cache.delete(key));
    cache.set(key, p);
  }
  return p;
}

export async function imageSize(file: Blob): Promise<{ w: number; h: number } | null> {
  try {
    const bmp = await createImageBitmap(file);
    const r = { w: bmp.width, h: bmp.height };
    bmp.close();
    return r;
  } catch {
    return null;
  }
}

/** Uploads a file and sends it; encrypted rooms get an encrypted upload. */
export async function sendFile(
  mx: MatrixClient,
  roomId: string,
  file: File,
  encrypted: boolean,
): Promise<{ eventId: string; content: Record<string, unknown> }> {
  const isImage = file.type.startsWith("image/");
  const info: Record<string, unknown> = { mimetype: file.type || "application/octet-stream", size: file.size };
  if (isImage) {
    const size = await imageSize(file);
    if (size) Object.assign(info, size);
  }
  const content: Record<string, unknown> = {
    msgtype: isImage ? "m.image" : "m.file",
    body: file.name || (isImage ? "image" : "file"),
    info,
  };
  if (encrypted) {
    const { data, info: enc } = await encryptAttachment(await file.arrayBuffer());
    const up = await mx.uploadContent(new Blob([data], { type: "application/octet-stream" }), {
      type: "application/octet-stream",
      includeFilename: false,
    });
    content.file = { url: up.content_uri, ...enc };
  } else {
    const up = await mx.uploadContent(file, { type: file.type || "application/octet-stream", name: file.name });
    content.url = up.content_uri;
  }
  const r = await mx.sendMessage(roomId, content as any);
  return { eventId: r.event_id, content };
}
