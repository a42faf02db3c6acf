import { useEffect, useRef, useState } from "preact/hooks";
import { humanError } from "../lib/errors";
import type { MatrixClient } from "matrix-js-sdk";
import { MatrixError, setSecretKeyBytes, useRecoveryKey } from "../lib/session";
import { LockIcon } from "./icons";
import { WhoseEnrolment } from "./Enrol";

export type KeyStatus = "ready" | "needs-setup" | "needs-recovery";

/** What this device still needs: nothing, a first set-up, or the recovery key. */
export async function keyStatus(mx: MatrixClient): Promise<KeyStatus> {
  const crypto = mx.getCrypto();
  if (!crypto) return "ready";
  if (await crypto.isCrossSigningReady()) return "ready";
  const has = await crypto.userHasCrossSigningKeys(mx.getUserId()!, true);
  return has ? "needs-recovery" : "needs-setup";
}

const SKIP_KEY = (mx: MatrixClient) => `hotline.keys-skipped:${mx.getUserId()}:${mx.getDeviceId()}`;
export const skippedRecovery = (mx: MatrixClient) => localStorage.getItem(SKIP_KEY(mx)) === "1";

/** Answers the user-interactive auth of a key upload with the password. */
function passwordAuth(mx: MatrixClient, password: string) {
  return async (makeRequest: (auth: Record<string, unknown> | null) => Promise<unknown>) => {
    const auth = {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: mx.getUserId() },
      password,
    };
    try {
      await makeRequest(null);
    } catch (e: any) {
      const session = e?.data?.session;
      if (e?.httpStatus !== 401) throw e;
      await makeRequest(session ? { ...auth, session } : auth);
    }
  };
}

export function KeySetup(props: {
  mx: MatrixClient;
  status: Exclude<KeyStatus, "ready">;
  password: string | null;
  /** During enrolment: the screen says whose enrolment it is. */
  enrolment?: boolean;
  onDone: () => void;
}) {
  const { mx } = props;
  const [step, setStep] = useState<"intro" | "working" | "show" | "recover">(
    props.status === "needs-setup" ? "intro" : "recover",
  );
  const [password, setPassword] = useState(props.password || "");
  const [recoveryKey, setRecoveryKey] = useState("");
  const [saved, setSaved] = useState(false);
  const [input, setInput] = useState("");
  const [error, setError] = useState<string | null>(null);
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => heading.current?.focus(), [step]);

  const setUp = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setStep("working");
    const crypto = mx.getCrypto()!;
    try {
      const key = await crypto.createRecoveryKeyFromPassphrase();
      setSecretKeyBytes(key.privateKey);
      await crypto.bootstrapCrossSigning({
        setupNewCrossSigning: true,
        authUploadDeviceSigningKeys: passwordAuth(mx, password),
      });
      await crypto.bootstrapSecretStorage({
        createSecretStorageKey: async () => key,
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
      });
      setRecoveryKey(key.encodedPrivateKey!);
      setStep("show");
    } catch (err) {
      setSecretKeyBytes(null);
      setError(
        err instanceof MatrixError || (err as any)?.httpStatus === 401
          ? "Your password was not accepted."
          : humanError(err, "Key set-up failed."),
      );
      setStep("intro");
    }
  };

  const finish = () => {
    setSecretKeyBytes(null);
    setRecoveryKey("");
    props.onDone();
  };

  const recover = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setStep("working");
    const crypto = mx.getCrypto()!;
    try {
      useRecoveryKey(input);
    } catch {
      setError("That is not a valid recovery key. It is 48 letters and digits in groups of four.");
      setStep("recover");
      return;
    }
    try {
      await crypto.bootstrapCrossSigning({});
      if (!(await crypto.isCrossSigningReady())) throw new Error("That recovery key does not unlock this account's keys.");
      try {
        await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
        await crypto.checkKeyBackupAndEnable();
        // Restore message keys in the background; messages decrypt as they arrive.
        crypto.restoreKeyBackup().catch(() => undefined);
      } catch {
        /* no backup yet: nothing to restore */
      }
      localStorage.removeItem(SKIP_KEY(mx));
      useRecoveryKey(null);
      props.onDone();
    } catch (err) {
      useRecoveryKey(null);
      setError(humanError(err));
      setStep("recover");
    }
  };

  const skip = () => {
    localStorage.setItem(SKIP_KEY(mx), "1");
    props.onDone();
  };

  const download = () => {
    const blob = new Blob([`Hotline recovery key for ${mx.getUserId()}\n\n${recoveryKey}\n`], { type: "text/plain" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "hotline-recovery-key.txt";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };

  return (
    <main class="auth" aria-labelledby="keys-title">
      <div class="auth-card">
        <div class="brand">
          <span class="brand-mark" aria-hidden="true">
            <LockIcon size={22} />
          </span>
          <span class="brand-name">Hotline</span>
        </div>
        {props.enrolment && <WhoseEnrolment mx={mx} />}
        {step === "intro" && (
          <form class="form" onSubmit={setUp}>
            <h1 id="keys-title" tabIndex={-1} ref={heading}>
              Set up secure keys
            </h1>
            <p class="muted">
              Your messages are encrypted on this device. Hotline will create your identity keys and an encrypted
              backup of your message keys, locked with a <strong>recovery key</strong> that only you hold. You will
              need it to read your messages on a new device.
            </p>
            {!props.password && (
              <>
                <label for="keys-password">Confirm your password</label>
                <input
                  id="keys-password"
                  type="password"
                  autoComplete="current-password"
                  value={password}
                  onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
                />
              </>
            )}
            {error && (
              <p class="error" role="alert">
                {error}
              </p>
            )}
            <button class="primary wide" type="submit" disabled={!password}>
              Create my recovery key
            </button>
          </form>
        )}
        {step === "working" && (
          <div role="status" class="working">
            <h1 id="keys-title" tabIndex={-1} ref={heading}>
              Securing your account…
            </h1>
            <div class="spinner" aria-hidden="true" />
          </div>
        )}
        {step === "show" && (
          <div class="form">
            <h1 id="keys-title" tabIndex={-1} ref={heading}>
              Your recovery key
            </h1>
            <p class="muted">
              Store it somewhere safe, away from this device. It is shown <strong>only once</strong>; without it,
              a new device cannot read your past messages.
            </p>
            <output class="recovery-key" aria-label="Recovery key" data-testid="recovery-key">
              {recoveryKey}
            </output>
            <div class="row">
              <button type="button" onClick={() => navigator.clipboard?.writeText(recoveryKey)}>
                Copy
              </button>
              <button type="button" onClick={download}>
                Download
              </button>
            </div>
            <label class="check">
              <input type="checkbox" checked={saved} onChange={(e) => setSaved((e.target as HTMLInputElement).checked)} />
              I have stored my recovery key
            </label>
            <button class="primary wide" type="button" disabled={!saved} onClick={finish}>
              Continue
            </button>
          </div>
        )}
        {step === "recover" && (
          <form class="form" onSubmit={recover}>
            <h1 id="keys-title" tabIndex={-1} ref={heading}>
              Confirm it's you
            </h1>
            <p class="muted">
              This is a new device. Enter your recovery key to verify it and restore your encrypted messages.
            </p>
            <label for="recovery-input">Recovery key</label>
            <textarea
              id="recovery-input"
              rows={3}
              spellcheck={false}
              autoComplete="off"
              value={input}
              onInput={(e) => setInput((e.target as HTMLTextAreaElement).value)}
            />
            {error && (
              <p class="error" role="alert">
                {error}
              </p>
            )}
            <button class="primary wide" type="submit" disabled={!input.trim()}>
              Verify this device
            </button>
            <button class="link" type="button" onClick={skip}>
              Skip for now (past messages stay unreadable here)
            </button>
          </form>
        )}
      </div>
    </main>
  );
}
