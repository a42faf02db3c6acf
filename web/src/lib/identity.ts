// Who is who: the server's directory of attestations, verified here, and
// compared with each official's current cross-signing master key.
//
// Per user the status is one of
//   verified      a valid attestation whose master key is the user's current one
//   key-mismatch  a valid attestation, but the user's master key changed since
//                 (or is gone): their line pauses until the office vouches again
//   revoked       the office revoked the attestation
//   unverified    no (valid) attestation: nothing is claimed
//   unknown       not loaded yet, or the server has no directory
//
// Refreshed on start, when /sync reports changed device lists (the server
// reports a vouch, a revocation and a new identity key that way), when the
// crypto layer reports a changed identity, when the window regains focus,
// every minute while the page is visible, and when someone it does not list
// turns up as an aide on a line (`lookForIdentity`).
import { useEffect, useState } from "preact/hooks";
import type { MatrixClient } from "matrix-js-sdk";
import { CryptoEvent } from "matrix-js-sdk/lib/crypto-api";
import { api, MatrixError, onDeviceListsChanged } from "./session";
import {
  Attestation,
  DirectoryEntry,
  ServerKeys,
  serverOf,
  verifyDirectory,
  verifyPeerDirectory,
  verifyServerKeys,
} from "./attestation";

/** An official a name passes for (`/_hotline/v1/resembles`). */
export interface Resembled {
  user_id: string;
  name: string;
  title: string;
  country: string;
}

export type IdentityStatus =
  | { kind: "unknown" }
  | { kind: "unverified"; reason?: string }
  | { kind: "verified"; att: Attestation }
  | { kind: "revoked"; att?: Attestation; revokedTs: number }
  | { kind: "key-mismatch"; att: Attestation; currentKey: string | null };

const REFRESH_MS = 60_000;

class IdentityStore {
  private entries = new Map<string, DirectoryEntry>();
  /** Current master public key per attested user (null: none uploaded). */
  private masterKeys = new Map<string, string | null>();
  private serverKeys: ServerKeys | null = null;
  /** Why a peer government's directory could not be had or checked. */
  private peerErrors = new Map<string, string>();
  /** `userId\nname` → the official the name passes for (or none). */
  private resembles = new Map<string, Resembled | null | "asking">();
  private running: Promise<void> | null = null;
  private again = false;
  private timer: ReturnType<typeof setInterval> | null = null;
  private debounce: ReturnType<typeof setTimeout> | null = null;
  private offDeviceLists: (() => void) | null = null;
  /** When the directory was last read again for someone it did not list. */
  private lookedFor = new Map<string, number>();
  /** False when the server has no directory (not a Hotline server). */
  available = true;
  loaded = false;
  lastError: string | null = null;

  constructor(
    private mx: MatrixClient,
    private onChange: () => void,
  ) {}

  start(): void {
    this.refresh();
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, REFRESH_MS);
    window.addEventListener("focus", this.onFocus);
    document.addEventListener("visibilitychange", this.onFocus);
    this.mx.on(CryptoEvent.UserTrustStatusChanged, this.onCrypto);
    this.mx.on(CryptoEvent.DevicesUpdated, this.onCrypto);
    this.mx.on(CryptoEvent.KeysChanged, this.onCrypto);
    // A vouch, a revocation or a new identity key of someone we share a
    // room with (or of ourselves) shows up in /sync's device_lists.
    this.offDeviceLists = onDeviceListsChanged(() => this.soon());
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    window.removeEventListener("focus", this.onFocus);
    document.removeEventListener("visibilitychange", this.onFocus);
    this.mx.off(CryptoEvent.UserTrustStatusChanged, this.onCrypto);
    this.mx.off(CryptoEvent.DevicesUpdated, this.onCrypto);
    this.mx.off(CryptoEvent.KeysChanged, this.onCrypto);
    this.offDeviceLists?.();
  }

  private onFocus = () => {
    if (document.visibilityState === "visible") this.soon();
  };

  private onCrypto = () => this.soon();

  /** A refresh shortly: several triggers in a row make one request. */
  private soon(): void {
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.refresh();
    }, 250);
  }

  private changed(): void {
    this.onChange();
  }

  /** Fetches and verifies the directory and the attested users' current master keys. */
  refresh(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.load();
        } while (this.again);
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  private async load(): Promise<void> {
    const base = this.mx.getHomeserverUrl();
    const token = this.mx.getAccessToken() || undefined;
    let dir: Record<string, any>;
    try {
      dir = await api(base, "GET", "/_hotline/v1/directory", undefined, token);
    } catch (e) {
      if (e instanceof MatrixError && (e.status === 404 || e.errcode === "M_UNRECOGNIZED")) {
        this.available = false;
        this.loaded = true;
        this.changed();
      } else {
        this.lastError = e instanceof Error ? e.message : String(e);
      }
      return;
    }
    this.available = true;
    try {
      // Only our own server's attestations can be checked: its key comes
      // from its own (self-signed) key document, fetched again when an
      // attestation names a key we don't hold.
      const issuer = dir.issuer;
      if (issuer !== this.mx.getDomain()) throw new Error(`the directory's issuer ${issuer} is not this server`);
      const keyIds = new Set<string>();
      for (const a of Array.isArray(dir.attestations) ? dir.attestations : []) {
        for (const id of Object.keys(a?.signatures?.[issuer] || {})) keyIds.add(id);
      }
      if (!this.serverKeys || [...keyIds].some((id) => !this.serverKeys!.keys.has(id))) {
        const doc = await api(base, "GET", "/_matrix/key/v2/server");
        delete doc.__status;
        this.serverKeys = await verifyServerKeys(doc, issuer);
      }
      const entries = new Map<string, DirectoryEntry>();
      for (const [u, e] of await verifyDirectory(dir, this.serverKeys, Date.now())) {
        // A server vouches for its own users only.
        if (serverOf(u) === issuer) entries.set(u, e);
      }
      // The other governments' officials, from their own directories,
      // fetched through this server and checked with the keys it pinned.
      // One that cannot be read or checked leaves its officials unverified.
      const peerErrors = new Map<string, string>();
      for (const peer of Array.isArray(dir.peers) ? (dir.peers as string[]) : []) {
        try {
          const answer = await api(base, "GET", `/_hotline/v1/directory/${encodeURIComponent(peer)}`, undefined, token);
          for (const [u, e] of await verifyPeerDirectory(answer, peer, Date.now())) entries.set(u, e);
        } catch (e) {
          peerErrors.set(peer, e instanceof Error ? e.message : String(e));
        }
      }
      this.peerErrors = peerErrors;
      const attested = [...entries].filter(([, e]) => e.status === "verified").map(([u]) => u);
      const masterKeys = new Map<string, string | null>();
      if (attested.length) {
        const r = await this.mx.downloadKeysForUsers(attested);
        for (const u of attested) {
          const keys = r.master_keys?.[u]?.keys;
          masterKeys.set(u, keys ? (Object.values(keys)[0] as string) : null);
        }
      }
      // A new official may be the one a name already judged harmless
      // passes for: those names are asked about again.
      const officials = (m: Map<string, DirectoryEntry>) => [...m.keys()].sort().join("\n");
      if (officials(entries) !== officials(this.entries)) {
        for (const [k, v] of this.resembles) if (v === null) this.resembles.delete(k);
      }
      this.entries = entries;
      this.masterKeys = masterKeys;
      this.lastError = null;
    } catch (e) {
      this.lastError = e instanceof Error ? e.message : String(e);
      // Nothing is trusted that could not be checked.
      this.entries = new Map();
    }
    this.loaded = true;
    this.changed();
  }

  /**
   * Someone the directory did not list turned up where who they are
   * matters (an aide brought onto a line): read it again soon, at most
   * once a minute per user, so a newly vouched official shows verified
   * without waiting for the minute's refresh.
   */
  lookFor(userId: string): void {
    if (!this.loaded || !this.available || this.entries.has(userId)) return;
    const last = this.lookedFor.get(userId) || 0;
    if (Date.now() - last < REFRESH_MS) return;
    this.lookedFor.set(userId, Date.now());
    this.soon();
  }

  /** The officials whose attestation verifies and whose key is the attested one. */
  verified(): Attestation[] {
    const out: Attestation[] = [];
    for (const u of this.entries.keys()) {
      const s = this.status(u);
      if (s.kind === "verified") out.push(s.att);
    }
    return out;
  }

  /** This client's own server. */
  ownServer(): string | null {
    return this.mx.getDomain();
  }

  /**
   * For a user of another server: the official their display name passes
   * for, as this server's name guard judges it (`/_hotline/v1/resembles`;
   * this server's own users cannot take such a name). Asked once per
   * user and name; `null` until known, or when none.
   */
  resemblance(userId: string): Resembled | null {
    const own = this.mx.getDomain();
    if (!own || serverOf(userId) === own) return null;
    const name = this.displayName(userId);
    if (!name) return null;
    const key = `${userId}\n${name}`;
    const known = this.resembles.get(key);
    if (known !== undefined) return known === "asking" ? null : known;
    this.resembles.set(key, "asking");
    const q = `?user_id=${encodeURIComponent(userId)}&name=${encodeURIComponent(name)}`;
    api(this.mx.getHomeserverUrl(), "GET", `/_hotline/v1/resembles${q}`, undefined, this.mx.getAccessToken() || undefined)
      .then((r) => {
        this.resembles.set(key, r?.official ? (r.official as Resembled) : null);
        this.changed();
      })
      .catch(() => this.resembles.delete(key));
    return null;
  }

  /** The name a user shows in the rooms this client shares with them. */
  private displayName(userId: string): string | null {
    for (const room of this.mx.getRooms()) {
      const m = room.getMember(userId);
      if (m?.rawDisplayName && m.rawDisplayName !== userId) return m.rawDisplayName;
    }
    return null;
  }

  status(userId: string): IdentityStatus {
    if (!this.loaded || !this.available) return { kind: "unknown" };
    const e = this.entries.get(userId);
    if (!e) {
      const why = this.peerErrors.get(serverOf(userId));
      return why ? { kind: "unverified", reason: `${serverOf(userId)}'s directory: ${why}` } : { kind: "unverified" };
    }
    if (e.status === "invalid") return { kind: "unverified", reason: e.reason };
    if (e.status === "revoked") return { kind: "revoked", att: e.attestation, revokedTs: e.revokedTs };
    const current = this.masterKeys.has(userId) ? this.masterKeys.get(userId)! : e.attestation.master_key;
    if (current !== e.attestation.master_key) return { kind: "key-mismatch", att: e.attestation, currentKey: current };
    return { kind: "verified", att: e.attestation };
  }
}

let store: IdentityStore | null = null;
let version = 0;
const listeners = new Set<() => void>();

function notify(): void {
  version++;
  for (const fn of [...listeners]) fn();
}

/** Starts watching the directory for this client (once per session). */
export function startIdentity(mx: MatrixClient): void {
  if (store) stopIdentity();
  store = new IdentityStore(mx, notify);
  store.start();
  notify();
}

export function stopIdentity(): void {
  store?.stop();
  store = null;
  notify();
}

/** Whether the directory has been read (or found missing) at least once. */
export function identityLoaded(): boolean {
  return !!store?.loaded;
}

/** Refreshes now (a "Check again" button); resolves when done. */
export function refreshIdentity(): Promise<void> {
  return store ? store.refresh() : Promise.resolve();
}

/** Reads the directory again soon when it does not list `userId` yet (see IdentityStore.lookFor). */
export function lookForIdentity(userId: string): void {
  store?.lookFor(userId);
}

/** The directory's verified officials, by name (for the pickers). */
export function verifiedOfficials(): Attestation[] {
  return (store ? store.verified() : []).sort((a, b) => a.name.localeCompare(b.name));
}

export function identityOf(userId: string): IdentityStatus {
  return store ? store.status(userId) : { kind: "unknown" };
}

/** Re-renders when the directory (or a master key) changes; returns a version number. */
export function useIdentityVersion(): number {
  const [v, setV] = useState(version);
  useEffect(() => {
    const fn = () => setV(version);
    listeners.add(fn);
    fn();
    return () => {
      listeners.delete(fn);
    };
  }, []);
  return v;
}

/** The identity status of one user, kept current. */
export function useIdentity(userId: string): IdentityStatus {
  useIdentityVersion();
  return identityOf(userId);
}

/** The official a user of another server's name passes for, kept current. */
export function useResemblance(userId: string): Resembled | null {
  useIdentityVersion();
  return store ? store.resemblance(userId) : null;
}

/** Whether a status stops a line: the counterpart's identity can't be trusted now. */
export function blocksLine(s: IdentityStatus): boolean {
  return s.kind === "key-mismatch" || s.kind === "revoked";
}

/** "President · Avalon". */
export function titleLine(att: Attestation): string {
  return `${att.title} · ${att.country}`;
}

/**
 * The badge text: "President · Avalon" for this server's officials;
 * "Prime Minister · Borduria, vouched by Borduria Chancellery (gov-b)" for
 * another government's, whose office and server are named.
 */
export function badgeLine(att: Attestation): string {
  const own = store?.ownServer();
  if (!own || att.issuer === own) return titleLine(att);
  return `${titleLine(att)}, vouched by ${att.office} (${att.issuer})`;
}

/** The cross-signing master public key this device holds for its own user. */
export async function ownMasterKey(mx: MatrixClient): Promise<string | null> {
  try {
    return (await mx.getCrypto()?.getCrossSigningKeyId()) ?? null;
  } catch {
    return null;
  }
}
