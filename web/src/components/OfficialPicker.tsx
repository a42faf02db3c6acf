import { useRef, useState } from "preact/hooks";
import type { Attestation } from "../lib/attestation";
import { titleLine, useIdentityVersion, verifiedOfficials } from "../lib/identity";
import { SealCheckIcon } from "./icons";

let pickers = 0;

/**
 * A searchable picker of the officials the directory vouches for (their
 * attestation verifies here): name, title, country. An ARIA combobox:
 * type to filter (name, title, country, user id), Up/Down to move, Enter
 * to pick, Escape to close. `value` is the picked user id.
 *
 * With `otherUser`, text that is not an official's is offered as a plain
 * user id (the new-line dialog also reaches accounts that are not
 * officials); the caller reads it through `onText`.
 */
export function OfficialPicker(props: {
  id: string;
  label: string;
  value: string | null;
  onChange: (userId: string | null) => void;
  /** Only these roles (default: all). */
  roles?: string[];
  /** Never offered (oneself, one's own principal). */
  exclude?: string[];
  otherUser?: (text: string) => string | null;
  onText?: (text: string) => void;
  placeholder?: string;
  autoFocus?: boolean;
}) {
  useIdentityVersion();
  const [query, setQuery] = useState("");
  const [open, setOpen] = useState(false);
  const [active, setActive] = useState(0);
  const uid = useRef(`picker-${++pickers}`).current;
  const input = useRef<HTMLInputElement>(null);

  const all = verifiedOfficials().filter(
    (a) => (!props.roles || props.roles.includes(a.role)) && !(props.exclude || []).includes(a.user_id),
  );
  const picked = props.value ? all.find((a) => a.user_id === props.value) || null : null;
  const q = query.trim().toLowerCase();
  const matches = all.filter((a) =>
    !q ? true : [a.name, a.title, a.country, a.user_id, a.office].some((f) => f.toLowerCase().includes(q)),
  );
  const other = props.otherUser && q && !matches.some((a) => a.user_id.toLowerCase() === q) ? props.otherUser(query) : null;
  type Option = { userId: string; att: Attestation | null };
  const options: Option[] = [...matches.map((a) => ({ userId: a.user_id, att: a })), ...(other ? [{ userId: other, att: null }] : [])];
  const at = Math.min(active, Math.max(options.length - 1, 0));
  const optionId = (i: number) => `${uid}-opt-${i}`;

  const choose = (o: Option) => {
    props.onChange(o.userId);
    setQuery(o.att ? "" : o.userId);
    props.onText?.(o.att ? "" : o.userId);
    setOpen(false);
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "ArrowDown") {
      e.preventDefault();
      if (!open) setOpen(true);
      else setActive(Math.min(at + 1, options.length - 1));
    } else if (e.key === "ArrowUp") {
      e.preventDefault();
      setActive(Math.max(at - 1, 0));
    } else if (e.key === "Enter" && open && options[at]) {
      e.preventDefault();
      choose(options[at]);
    } else if (e.key === "Escape" && open) {
      e.preventDefault();
      e.stopPropagation();
      setOpen(false);
    }
  };

  if (picked) {
    return (
      <div class="picker-picked" data-testid={`${props.id}-picked`}>
        <span id={props.id} class="picker-choice" aria-label={`${props.label}: ${picked.name}, ${titleLine(picked)}`}>
          <SealCheckIcon size={16} /> <strong>{picked.name}</strong> <span class="muted">{titleLine(picked)}</span>
        </span>
        <button
          type="button"
          aria-label={`Clear ${props.label.toLowerCase()}`}
          onClick={() => {
            props.onChange(null);
            setQuery("");
            setTimeout(() => input.current?.focus());
          }}
        >
          Change
        </button>
      </div>
    );
  }
  return (
    <div class="picker">
      <input
        id={props.id}
        ref={input}
        role="combobox"
        aria-autocomplete="list"
        aria-expanded={open && options.length > 0}
        aria-controls={`${uid}-list`}
        aria-activedescendant={open && options.length ? optionId(at) : undefined}
        autoComplete="off"
        autoCapitalize="none"
        spellcheck={false}
        autoFocus={props.autoFocus}
        placeholder={props.placeholder || "Search officials by name, title or country"}
        value={query}
        onInput={(e) => {
          const v = (e.target as HTMLInputElement).value;
          setQuery(v);
          props.onText?.(v);
          if (props.value) props.onChange(null);
          setActive(0);
          setOpen(true);
        }}
        onFocus={() => setOpen(true)}
        onBlur={() => setTimeout(() => setOpen(false), 150)}
        onKeyDown={onKeyDown}
      />
      {open && options.length > 0 && (
        <ul id={`${uid}-list`} role="listbox" class="picker-list" aria-label="Matching officials">
          {options.map((o, i) => (
            <li
              id={optionId(i)}
              key={o.userId}
              role="option"
              aria-selected={i === at}
              class={i === at ? "active" : ""}
              data-user={o.userId}
              onMouseDown={(e) => {
                e.preventDefault();
                choose(o);
              }}
              onMouseEnter={() => setActive(i)}
            >
              {o.att ? (
                <>
                  <span class="picker-name">
                    <SealCheckIcon size={14} /> {o.att.name}
                  </span>
                  <span class="picker-title">{titleLine(o.att)}</span>
                  <span class="picker-id">{o.userId}</span>
                </>
              ) : (
                <>
                  <span class="picker-name">{o.userId}</span>
                  <span class="picker-title">Not a verified official</span>
                </>
              )}
            </li>
          ))}
        </ul>
      )}
      {open && q && options.length === 0 && (
        <p class="muted small" role="status">
          No verified official matches “{query.trim()}”.
        </p>
      )}
    </div>
  );
}
