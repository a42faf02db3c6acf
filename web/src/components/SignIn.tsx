import { useState } from "preact/hooks";
import { humanError } from "../lib/errors";
import { Credentials, defaultBaseUrl, MatrixError, passwordLogin, registerAccount } from "../lib/session";
import { LockIcon } from "./icons";

function explain(e: unknown): string {
  if (e instanceof MatrixError) {
    if (e.errcode === "M_USER_IN_USE") return "That user name is taken.";
    if (e.errcode === "M_INVALID_USERNAME") return "User names may use a–z, 0–9 and . _ = - / only.";
    if (e.errcode === "M_WEAK_PASSWORD") return "Choose a longer password.";
    if (e.errcode === "M_LIMIT_EXCEEDED") return "Too many attempts. Wait a moment and try again.";
  }
  return humanError(e);
}

export function SignIn(props: { onSignedIn: (c: Credentials, password: string, fresh: boolean) => void; notice?: string }) {
  const [mode, setMode] = useState<"signin" | "register">(
    new URLSearchParams(window.location.search).has("token") ? "register" : "signin",
  );
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [token, setToken] = useState(new URLSearchParams(window.location.search).get("token") || "");
  const [server, setServer] = useState(defaultBaseUrl());
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    if (mode === "register" && password !== confirm) {
      setError("The passwords do not match.");
      return;
    }
    if (mode === "register" && password.length < 8) {
      setError("Use at least 8 characters for your password.");
      return;
    }
    setBusy(true);
    try {
      const c =
        mode === "signin"
          ? await passwordLogin(server, user, password)
          : await registerAccount(server, user, password, token);
      props.onSignedIn(c, password, mode === "register");
    } catch (err) {
      setError(
        mode === "signin" && err instanceof MatrixError && err.errcode === "M_FORBIDDEN"
          ? "Wrong user name or password."
          : explain(err),
      );
      setBusy(false);
    }
  };

  return (
    <main class="auth" aria-labelledby="auth-title">
      <div class="auth-card">
        <div class="brand">
          <span class="brand-mark" aria-hidden="true">
            <LockIcon size={22} />
          </span>
          <span class="brand-name">Hotline</span>
        </div>
        <h1 id="auth-title">{mode === "signin" ? "Sign in" : "Create your account"}</h1>
        <p class="muted">
          {mode === "signin"
            ? "Encrypted texts and calls between you and your counterparts."
            : "Your protocol office gave you a registration token for first-time set-up."}
        </p>
        {props.notice && (
          <p class="notice" role="status">
            {props.notice}
          </p>
        )}
        <form onSubmit={submit} class="form" noValidate>
          <label for="auth-user">User name</label>
          <input
            id="auth-user"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={user}
            placeholder="alice or @alice:example.org"
            onInput={(e) => setUser((e.target as HTMLInputElement).value)}
          />
          <label for="auth-password">Password</label>
          <input
            id="auth-password"
            name="password"
            type="password"
            autoComplete={mode === "signin" ? "current-password" : "new-password"}
            required
            value={password}
            onInput={(e) => setPassword((e.target as HTMLInputElement).value)}
          />
          {mode === "register" && (
            <>
              <label for="auth-confirm">Confirm password</label>
              <input
                id="auth-confirm"
                type="password"
                autoComplete="new-password"
                required
                value={confirm}
                onInput={(e) => setConfirm((e.target as HTMLInputElement).value)}
              />
              <label for="auth-token">Registration token</label>
              <input
                id="auth-token"
                autoComplete="one-time-code"
                spellcheck={false}
                value={token}
                onInput={(e) => setToken((e.target as HTMLInputElement).value)}
              />
            </>
          )}
          <details class="server">
            <summary>Server</summary>
            <label for="auth-server">Homeserver address</label>
            <input
              id="auth-server"
              type="url"
              value={server}
              onInput={(e) => setServer((e.target as HTMLInputElement).value)}
            />
          </details>
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <button class="primary wide" type="submit" disabled={busy || !user || !password}>
            {busy ? (mode === "signin" ? "Signing in…" : "Creating account…") : mode === "signin" ? "Sign in" : "Create account"}
          </button>
        </form>
        <p class="switch">
          {mode === "signin" ? (
            <>
              First time here?{" "}
              <button class="link" type="button" onClick={() => (setMode("register"), setError(null))}>
                Set up with a registration token
              </button>
            </>
          ) : (
            <>
              Already have an account?{" "}
              <button class="link" type="button" onClick={() => (setMode("signin"), setError(null))}>
                Sign in
              </button>
            </>
          )}
        </p>
      </div>
    </main>
  );
}
