// Validates HTTP responses against the Matrix spec's OpenAPI definitions
// (vendored in ../spec). Each response is matched to its operation by method
// and path template, and its JSON body is checked with Ajv (JSON Schema
// 2020-12, which OpenAPI 3.1 uses) against the schema the spec gives for that
// status code.
//
// Relaxations, all deliberate:
// - OpenAPI-only annotations (`example`, `examples` objects, `x-*`) and the
//   draft-04 `$schema` markers of the event schemas are dropped; they carry no
//   constraint.
// - Ajv's strict mode is off because the spec mixes annotation keywords into
//   schemas; this changes no validation result.
// - A $ref that would recurse into itself is cut to `{}` (none of the
//   response schemas used here is recursive; the guard is a safety net).
// Nothing else is changed: `additionalProperties` stays as the spec writes it
// (mostly absent, i.e. extra fields allowed), `required` and `enum` as written.
//
// Typed event checks: the OpenAPI schemas give an event's `content` only as
// `type: object`, so every event found in a response (anything with a string
// `type` and an object `content`: timeline, state, stripped, ephemeral,
// account data, to-device) also has its content checked against the event
// schema of its type (event-schemas/schema/TYPE.yaml, or
// m.room.message$MSGTYPE.yaml), where one is vendored. Redacted events
// (unsigned.redacted_because) are skipped, their content being stripped on purpose.
//
// The spec's `mx-*` string formats are checked with the grammars from the
// spec's appendices (see FORMATS below); `uri`, `int64`, `email` come from
// ajv-formats.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const here = path.dirname(fileURLToPath(import.meta.url));
export const SPEC_DIR = path.resolve(here, "../spec/data/api/client-server");
export const EVENT_DIR = path.resolve(here, "../spec/data/event-schemas/schema");

const FORMATS = {
    // Appendices, "Identifier grammar". User ids: historical characters are
    // allowed (the spec asks clients to accept them), so only the shape is checked.
    "mx-user-id": /^@[^:\s]+:[A-Za-z0-9.\-[\]:]+$/,
    // Room ids are opaque: `!localpart:server` before room version 12, `!hash` after.
    "mx-room-id": /^![^\s]+$/,
    "mx-room-alias": /^#[^:\s]+:[A-Za-z0-9.\-[\]:]+$/,
    // Event ids: `$opaque:server` in v1-2, `$base64hash` from v3.
    "mx-event-id": /^\$[^\s]+$/,
    "mx-server-name": /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$/,
    "mx-mxc-uri": /^mxc:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?\/[A-Za-z0-9_-]+$/,
    "mx-unpadded-base64": /^[A-Za-z0-9+/]*$/,
    "mx-urlsafe-unpadded-base64": /^[A-Za-z0-9_-]*$/,
};

const docs = new Map();
function load(file) {
    if (!docs.has(file)) docs.set(file, YAML.parse(fs.readFileSync(file, "utf8")));
    return docs.get(file);
}

function pointer(doc, frag) {
    if (!frag) return doc;
    return frag
        .replace(/^\//, "")
        .split("/")
        .reduce((node, part) => {
            const key = decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~");
            if (node == null || !(key in node)) throw new Error(`unresolvable pointer #${frag}`);
            return node[key];
        }, doc);
}

// Returns `node` with every $ref inlined and OpenAPI-only keywords dropped.
function resolve(node, file, stack = []) {
    if (Array.isArray(node)) return node.map((n) => resolve(n, file, stack));
    if (!node || typeof node !== "object") return node;
    if (typeof node.$ref === "string") {
        const [rel, frag = ""] = node.$ref.split("#");
        const target = rel ? path.resolve(path.dirname(file), rel) : file;
        const key = `${target}#${frag}`;
        if (stack.includes(key)) return {};
        const resolved = resolve(pointer(load(target), frag), target, [...stack, key]);
        const { $ref, ...siblings } = node;
        const rest = resolve(siblings, file, stack);
        // OpenAPI 3.1 allows keywords beside $ref; keep them as a conjunction.
        const constraining = Object.keys(rest).filter((k) => !["description", "title"].includes(k));
        return constraining.length ? { allOf: [resolved, rest] } : resolved;
    }
    const out = {};
    for (const [k, v] of Object.entries(node)) {
        if (k === "example" || k.startsWith("x-") || k === "$schema") continue;
        // `examples` is an OpenAPI map of named examples except in a schema,
        // where JSON Schema defines it as an array of annotations: drop both.
        if (k === "examples") continue;
        out[k] = resolve(v, file, stack);
    }
    return out;
}

function compileRoutes() {
    const routes = [];
    for (const name of fs.readdirSync(SPEC_DIR).filter((f) => f.endsWith(".yaml")).sort()) {
        const file = path.join(SPEC_DIR, name);
        const doc = load(file);
        if (!doc.paths) continue;
        const base = doc.servers?.[0]?.variables?.basePath?.default ?? "";
        for (const [template, item] of Object.entries(doc.paths)) {
            for (const [method, op] of Object.entries(item)) {
                if (!["get", "put", "post", "delete"].includes(method)) continue;
                // inviting.yaml writes "/rooms/{roomId}/invite " (a trailing space
                // keeps it apart from the 3PID invite's identical path).
                const full = base + template.trim();
                const params = (full.match(/\{[^}]+\}/g) ?? []).length;
                const source = full
                    .split(/(\{[^}]+\})/)
                    .map((part) => (part.startsWith("{") ? "([^/]*)" : part.replace(/[.*+?^$()|[\]\\]/g, "\\$&")))
                    .join("");
                routes.push({
                    method: method.toUpperCase(),
                    template: full,
                    operationId: op.operationId,
                    file,
                    responses: op.responses ?? {},
                    params,
                    regex: new RegExp(`^${source}$`),
                });
            }
        }
    }
    // A literal segment beats a parameter: try templates with fewer parameters first.
    return routes.sort((a, b) => a.params - b.params);
}

export class SpecValidator {
    constructor() {
        this.ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
        addFormats(this.ajv);
        for (const [name, re] of Object.entries(FORMATS)) this.ajv.addFormat(name, re);
        this.routes = compileRoutes();
        this.compiled = new Map();
        this.genericError = this.ajv.compile(resolve(load(path.join(SPEC_DIR, "definitions/errors/error.yaml")), path.join(SPEC_DIR, "definitions/errors/error.yaml")));
        this.eventValidators = new Map();
        /** Every validated response: {method, path, status, operationId, ok, errors, body} */
        this.results = [];
        /** Requests to paths the vendored spec has no operation for. */
        this.unmatched = [];
    }

    route(method, pathname) {
        // Older clients may use r0; the spec's operations are written for v3.
        const p = pathname.replace(/^\/_matrix\/client\/r0\//, "/_matrix/client/v3/");
        return this.routes.find((r) => r.method === method && r.regex.test(p));
    }

    validator(route, status) {
        const key = `${route.method} ${route.template} ${status}`;
        if (!this.compiled.has(key)) {
            const response = route.responses[String(status)];
            let fn = null;
            if (response) {
                const resp = resolve(response, route.file);
                const schema = resp.content?.["application/json"]?.schema;
                fn = schema ? this.ajv.compile(schema) : "no-json-schema";
            }
            this.compiled.set(key, fn);
        }
        return this.compiled.get(key);
    }

    /**
     * Checks one response. `body` is the parsed JSON (or undefined if the body
     * was not JSON). Records and returns the result.
     */
    check(method, url, status, body, contentType = "application/json") {
        const { pathname, search } = new URL(url, "http://x");
        const route = this.route(method, pathname);
        if (!route) {
            this.unmatched.push(`${method} ${pathname} -> ${status}`);
            return null;
        }
        const result = { method, path: pathname, query: new URLSearchParams(search), template: route.template, status, operationId: route.operationId, ok: true, errors: [], body };
        let fn = this.validator(route, status);
        if (fn === "no-json-schema" && status >= 400) {
            // A documented error status without a body schema: still a standard error body.
            fn = this.genericError;
        } else if (fn === null) {
            if (status >= 200 && status < 300) {
                result.ok = false;
                result.errors.push({ message: `status ${status} is not a documented response of ${route.operationId}` });
            } else {
                // An undocumented error status: it must still be a standard error body.
                fn = this.genericError;
            }
        }
        if (typeof fn === "function") {
            if (!/json/.test(contentType ?? "")) {
                result.ok = false;
                result.errors.push({ message: `Content-Type is ${contentType}, the spec's response is application/json` });
            } else if (body === undefined) {
                result.ok = false;
                result.errors.push({ message: "body is not JSON" });
            } else if (!fn(body)) {
                result.ok = false;
                result.errors.push(...fn.errors);
            }
        }
        if (body && typeof body === "object" && status >= 200 && status < 300) {
            const eventErrors = this.checkEvents(body, "");
            if (eventErrors.length) {
                result.ok = false;
                result.errors.push(...eventErrors);
            }
        }
        this.results.push(result);
        return result;
    }

    eventValidator(type, msgtype) {
        const candidates = type === "m.room.message" && typeof msgtype === "string" ? [`${type}$${msgtype}`, type] : [type];
        for (const name of candidates) {
            const file = path.join(EVENT_DIR, `${name}.yaml`);
            if (!this.eventValidators.has(file)) {
                let fn = null;
                if (fs.existsSync(file)) {
                    const contentSchemas = [];
                    const collect = (node) => {
                        if (!node || typeof node !== "object") return;
                        if (node.properties?.content) contentSchemas.push(node.properties.content);
                        (node.allOf ?? []).forEach(collect);
                    };
                    collect(resolve(load(file), file));
                    fn = this.ajv.compile({ allOf: contentSchemas });
                    fn.schemaName = name;
                }
                this.eventValidators.set(file, fn);
            }
            if (this.eventValidators.get(file)) return this.eventValidators.get(file);
        }
        return null;
    }

    /** Content checks of every event inside `node`; returns Ajv-style errors with full paths. */
    checkEvents(node, at) {
        const errors = [];
        if (Array.isArray(node)) {
            node.forEach((n, i) => errors.push(...this.checkEvents(n, `${at}/${i}`)));
            return errors;
        }
        if (!node || typeof node !== "object") return errors;
        const isEvent = typeof node.type === "string" && node.content && typeof node.content === "object" && !Array.isArray(node.content);
        if (isEvent) {
            if (!node.unsigned?.redacted_because) {
                const fn = this.eventValidator(node.type, node.content.msgtype);
                if (fn && !fn(node.content)) {
                    for (const e of fn.errors) {
                        errors.push({ ...e, instancePath: `${at}/content${e.instancePath}`, message: `${e.message} (event schema ${fn.schemaName})` });
                    }
                }
            }
            // Events nest only outside their content (unsigned.redacted_because, ...).
            for (const [k, v] of Object.entries(node)) if (k !== "content") errors.push(...this.checkEvents(v, `${at}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`));
            return errors;
        }
        for (const [k, v] of Object.entries(node)) errors.push(...this.checkEvents(v, `${at}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`));
        return errors;
    }

    violations() {
        return this.results.filter((r) => !r.ok);
    }

    /** A readable report of every violation, with the field and the offending value. */
    report(violations = this.violations()) {
        const seen = new Set();
        const lines = [];
        for (const v of violations) {
            for (const e of v.errors) {
                const value = e.instancePath ? valueAt(v.body, e.instancePath) : undefined;
                const line =
                    `${v.method} ${v.template} (${v.operationId}) ${v.status}: ` +
                    `${e.instancePath || "(body)"} ${e.message}` +
                    (e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : "") +
                    (e.schemaPath ? ` [schema ${e.schemaPath}]` : "") +
                    (value !== undefined ? `; server sent ${truncate(JSON.stringify(value))}` : "");
                if (!seen.has(line)) {
                    seen.add(line);
                    lines.push(line);
                }
            }
        }
        return lines.join("\n");
    }

    /** operationIds that got at least one 2xx response validated. */
    coveredOperations() {
        return new Set(this.results.filter((r) => r.status >= 200 && r.status < 300).map((r) => r.operationId));
    }
}

function valueAt(body, instancePath) {
    try {
        return instancePath
            .split("/")
            .slice(1)
            .reduce((n, k) => n?.[k.replace(/~1/g, "/").replace(/~0/g, "~")], body);
    } catch {
        return undefined;
    }
}

function truncate(s, n = 300) {
    return s && s.length > n ? `${s.slice(0, n)}...` : s;
}

/**
 * A fetch that records every JSON response's validation in `validator`.
 * Give it to matrix-js-sdk as `fetchFn`; use it for raw requests too.
 */
export function validatingFetch(validator) {
    return async (input, init = {}) => {
        const res = await fetch(input, init);
        const method = (init.method ?? (input instanceof Request ? input.method : "GET")).toUpperCase();
        const url = typeof input === "string" ? input : input.url ?? String(input);
        const type = res.headers.get("content-type") ?? "";
        // Media downloads and other non-JSON 2xx bodies are not validated here.
        if (/json/.test(type) || res.status >= 300) {
            try {
                const text = await res.clone().text();
                let body;
                try {
                    body = JSON.parse(text);
                } catch {
                    body = undefined;
                }
                validator.check(method, url, res.status, body, type);
            } catch {
                // The request was aborted (e.g. a /sync the client cancelled); nothing to validate.
            }
        }
        return res;
    };
}
