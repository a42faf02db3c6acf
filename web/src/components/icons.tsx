// Inline icons (no icon font, no CDN). Decorative: hidden from screen readers.
import type { JSX } from "preact";

function Icon({ d, size = 20, fill = false }: { d: string; size?: number; fill?: boolean }): JSX.Element {
  return (
    <svg
      width={size}
      height={size}
      viewBox="0 0 24 24"
      aria-hidden="true"
      focusable="false"
      fill={fill ? "currentColor" : "none"}
      stroke={fill ? "none" : "currentColor"}
      stroke-width="2"
      stroke-linecap="round"
      stroke-linejoin="round"
    >
      <path d={d} />
    </svg>
  );
}

const PHONE =
  "M22 16.9v3a2 2 0 0 1-2.2 2 19.8 19.8 0 0 1-8.6-3.1 19.5 19.5 0 0 1-6-6A19.8 19.8 0 0 1 2.1 4.2 2 2 0 0 1 4.1 2h3a2 2 0 0 1 2 1.7c.1.9.4 1.8.7 2.7a2 2 0 0 1-.5 2.1L8 9.8a16 16 0 0 0 6 6l1.3-1.3a2 2 0 0 1 2.1-.4c.9.3 1.8.6 2.7.7a2 2 0 0 1 1.7 2z";

export const PhoneIcon = (p: { size?: number }) => <Icon d={PHONE} size={p.size} />;
export const HangupIcon = (p: { size?: number }) => (
  <svg width={p.size || 20} height={p.size || 20} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
    <g transform="rotate(135 12 12)">
      <path d={PHONE} fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" />
    </g>
  </svg>
);
export const MicIcon = (p: { size?: number }) => (
  <Icon size={p.size} d="M12 2a3 3 0 0 0-3 3v7a3 3 0 0 0 6 0V5a3 3 0 0 0-3-3zM19 10v2a7 7 0 0 1-14 0v-2M12 19v3M8 22h8" />
);
export const MicOffIcon = (p: { size?: number }) => (
  <Icon
    size={p.size}
    d="M2 2l20 20M9 9v3a3 3 0 0 0 5.1 2.1M15 9.3V5a3 3 0 0 0-5.9-.8M17 16.9A7 7 0 0 1 5 12v-2M19 10v2c0 .8-.1 1.5-.4 2.2M12 19v3M8 22h8"
  />
);
export const SendIcon = () => <Icon d="M22 2L11 13M22 2l-7 20-4-9-9-4 20-7z" />;
export const AttachIcon = () => (
  <Icon d="M21.4 11.1l-9.2 9.2a6 6 0 0 1-8.5-8.5l9.2-9.2a4 4 0 0 1 5.7 5.7l-9.2 9.2a2 2 0 0 1-2.8-2.8l8.5-8.5" />
);
export const PlusIcon = () => <Icon d="M12 5v14M5 12h14" />;
export const BackIcon = () => <Icon d="M15 18l-6-6 6-6" />;
export const GearIcon = () => (
  <Icon d="M12 15a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-1.8-.3 1.7 1.7 0 0 0-1 1.5V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-1.1-1.5 1.7 1.7 0 0 0-1.8.3l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1a1.7 1.7 0 0 0 .3-1.8 1.7 1.7 0 0 0-1.5-1H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.5-1.1 1.7 1.7 0 0 0-.3-1.8l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1a1.7 1.7 0 0 0 1.8.3H9a1.7 1.7 0 0 0 1-1.5V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 1 1.5 1.7 1.7 0 0 0 1.8-.3l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0-.3 1.8V9a1.7 1.7 0 0 0 1.5 1H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z" />
);
export const LockIcon = (p: { size?: number }) => (
  <Icon size={p.size} d="M5 11h14v10H5zM8 11V7a4 4 0 0 1 8 0v4" />
);
export const AlertIcon = (p: { size?: number }) => (
  <Icon size={p.size} d="M10.3 3.9L1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0zM12 9v4M12 17h.01" />
);
export const CheckIcon = (p: { size?: number }) => <Icon size={p.size || 14} d="M20 6L9 17l-5-5" />;
export const DoubleCheckIcon = (p: { size?: number }) => <Icon size={p.size || 14} d="M17 6L7 16l-4-4M22 6L12 16" />;
export const ClockIcon = (p: { size?: number }) => <Icon size={p.size || 14} d="M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20zM12 6v6l4 2" />;
export const EditIcon = () => <Icon size={16} d="M12 20h9M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z" />;
export const TrashIcon = () => <Icon size={16} d="M3 6h18M8 6V4h8v2M19 6l-1 14H6L5 6" />;
export const CloseIcon = () => <Icon d="M18 6L6 18M6 6l12 12" />;
export const RetryIcon = () => <Icon size={14} d="M1 4v6h6M3.5 15a9 9 0 1 0 2.1-9.4L1 10" />;
export const MissedIcon = (p: { size?: number }) => <Icon size={p.size || 16} d="M23 1l-6 6M17 1l6 6M22 16.9v3a2 2 0 0 1-2.2 2A19.8 19.8 0 0 1 2.1 4.2 2 2 0 0 1 4.1 2h3" />;
/** A seal with a check: an identity vouched for by a protocol office. */
export const SealCheckIcon = (p: { size?: number }) => (
  <svg width={p.size || 16} height={p.size || 16} viewBox="0 0 24 24" aria-hidden="true" focusable="false">
    <path
      fill="currentColor"
      d="M3.85 8.62a4 4 0 0 1 4.78-4.77 4 4 0 0 1 6.74 0 4 4 0 0 1 4.78 4.78 4 4 0 0 1 0 6.74 4 4 0 0 1-4.77 4.78 4 4 0 0 1-6.75 0 4 4 0 0 1-4.78-4.77 4 4 0 0 1 0-6.76z"
    />
    <path class="seal-check" d="M8.5 12.2l2.4 2.4 4.6-4.9" fill="none" stroke="#fff" stroke-width="2.2" stroke-linecap="round" stroke-linejoin="round" />
  </svg>
);
export const ShieldAlertIcon = (p: { size?: number }) => (
  <Icon size={p.size || 16} d="M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10zM12 8v4M12 16h.01" />
);
export const TicketIcon = (p: { size?: number }) => (
  <Icon
    size={p.size}
    d="M3 7a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2v2a3 3 0 0 0 0 6v2a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-2a3 3 0 0 0 0-6zM13 5v2M13 11v2M13 17v2"
  />
);
export const CopyIcon = (p: { size?: number }) => (
  <Icon size={p.size || 16} d="M9 9h11v11H9zM5 15H4V4h11v1" />
);
export const QrIcon = (p: { size?: number }) => (
  <Icon size={p.size || 16} d="M3 3h7v7H3zM14 3h7v7h-7zM3 14h7v7H3zM14 14h3v3h-3zM20 14v.01M14 20h.01M17 20h4v-3M6 6h1v1H6zM17 6h1v1h-1zM6 17h1v1H6z" />
);
/** Several people: who is on a line. */
export const PeopleIcon = (p: { size?: number }) => (
  <Icon size={p.size} d="M16 21v-2a4 4 0 0 0-4-4H6a4 4 0 0 0-4 4v2M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM22 21v-2a4 4 0 0 0-3-3.9M16 3.1a4 4 0 0 1 0 7.8" />
);
export const LogIcon = (p: { size?: number }) => (
  <Icon size={p.size} d="M8 6h13M8 12h13M8 18h13M3 6h.01M3 12h.01M3 18h.01" />
);
export const DownloadIcon = (p: { size?: number }) => (
  <Icon size={p.size || 16} d="M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4M7 10l5 5 5-5M12 15V3" />
);
/** The official record: an archive box. */
export const ArchiveIcon = (p: { size?: number }) => (
  <Icon size={p.size || 14} d="M21 8v13H3V8M1 3h22v5H1zM10 12h4" />
);
