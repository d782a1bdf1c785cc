"""HTML pieces of the app: step cards, the final decision, annotation candidates, progress, banners."""

from __future__ import annotations

import html

from occmllm import prompts

STEP_TITLES = {"describe": "Describe", "identify": "Identify", "reflect": "Self-assessment",
               "reconstruct": "3D reconstruction", "identify_3d": "Identify on the render", "decide": "Decision"}


def in_order(view: str) -> dict:
    """Event-listener arguments for every listener that redraws one view (`view` names it): one queue for all of
    them, one answer at a time in the order asked. With a queue each (and the app's 16 at a time) an earlier choice's
    slower answer could replace a later one's."""
    return {"concurrency_id": view, "concurrency_limit": 1}


def follows_last(view: str) -> dict:
    """`in_order(view)` for an input or submit event: a control changed again while its answer is pending is answered
    too (gradio's default, once, drops that change), so the view follows the last choices."""
    return {**in_order(view), "trigger_mode": "always_last"}


def esc(text) -> str:
    return html.escape("" if text is None else str(text))


def banner(text: str, kind: str = "info") -> str:
    """kind: info, warn, error, ok."""
    return f'<div class="banner banner-{kind}">{text}</div>' if text else ""


def step_card(step, index: int) -> str:
    title = STEP_TITLES.get(step.name, step.name)
    if step.name == "describe":
        title += f" · {esc(step.info.get('attribute', ''))}"
    parts = [f'<div class="step step-{esc(step.name)}"><div class="step-head"><span class="step-no">{index}</span>'
             f'<span class="step-title">{title}</span><span class="step-time">{step.seconds * 1000:.0f} ms</span></div>',
             f'<div class="step-heading">{esc(step.heading)}</div>']
    if step.prompt:
        parts.append(f'<div class="row"><span class="k">Question</span><span class="v">{esc(prompts.strip_image(step.prompt))}</span></div>')
    if step.name == "reconstruct":
        ok = step.info.get("ok")
        parts.append(f'<div class="row"><span class="k">Result</span><span class="v">'
                     f'<span class="pill {"pill-ok" if ok else "pill-bad"}">{"mesh ready" if ok else "no mesh"}</span> '
                     f'{esc(step.info.get("message", ""))}</span></div>')
    elif step.raw is not None or step.parsed is not None:
        parts.append(f'<div class="row"><span class="k">Raw answer</span><code class="v raw">{esc(step.raw) or "&nbsp;"}</code></div>')
        parsed = step.parsed or prompts.UNPARSED
        cls = "pill-bad" if parsed == prompts.UNPARSED else "pill-ok"
        parts.append(f'<div class="row"><span class="k">Parsed</span><span class="v"><span class="pill {cls}">{esc(parsed)}</span></span></div>')
    if isinstance(step.info.get("classes"), dict):
        parts.append(probabilities_html(step.info["classes"], step.parsed))
    if isinstance(step.info.get("clarity"), dict):
        parts.append(probabilities_html(step.info["clarity"], step.parsed, "Answer probabilities", guessing_below=0.6))
    if step.info.get("note"):
        parts.append(f'<div class="row"><span class="k">Note</span><span class="v">{esc(step.info["note"])}</span></div>')
    for view in ("photo", "render"):  # a fused decision: the class probabilities of both readings, top three
        if isinstance(step.info.get(view), dict) and step.info.get("fused"):
            top = sorted(step.info[view].items(), key=lambda kv: -kv[1])[:3]
            text = ", ".join(f"{name} {p:.2f}" for name, p in top)
            parts.append(f'<div class="row"><span class="k">On the {view}</span><span class="v">{esc(text)}</span></div>')
    parts.append("</div>")
    return "".join(parts)


def probabilities_html(classes: dict[str, float], answer: str | None, title: str = "Class probabilities",
                       guessing_below: float = 0.5) -> str:
    """The model's probabilities of its possible answers (the eight classes, or Yes / No) as bars, most probable
    first; the answer it gave marked, and a hint that the model is guessing when the most probable one is under
    `guessing_below`."""
    rows = []
    for name, p in sorted(classes.items(), key=lambda kv: -kv[1]):
        mark = " probs-answer" if name == answer else ""
        rows.append(f'<div class="probs-row{mark}"><span class="probs-name">{esc(name)}</span>'
                    f'<span class="probs-bar"><span style="width:{max(0.0, min(1.0, p)) * 100:.1f}%"></span></span>'
                    f'<span class="probs-p">{p:.2f}</span></div>')
    top = max(classes.values()) if classes else 0.0
    hint = " · the model is guessing" if top < guessing_below else ""
    return (f'<div class="row"><span class="k">{esc(title)}{hint}</span><span class="v probs">'
            + "".join(rows) + "</span></div>")


def steps_html(steps) -> str:
    if not steps:
        return ('<div class="empty">Pick a photo and press <b>Run</b>. Each reasoning step appears here as soon as '
                'the model finishes it.</div>')
    return '<div class="steps">' + "".join(step_card(s, i + 1) for i, s in enumerate(steps)) + "</div>"


def running_html(steps, next_name: str) -> str:
    return steps_html(steps).removesuffix("</div>") + f'<div class="step step-pending">working on: {esc(next_name)}...</div></div>'


def final_html(trace) -> str:
    first = trace.step("identify")
    before = first.parsed if first else None
    changed = trace.used_3d and before != trace.final
    tag = ('<span class="pill pill-changed">changed by 3D</span>' if changed else
           '<span class="pill pill-kept">kept</span>')
    decide = trace.step("decide")  # its heading says whether 3D was required, its note why an answer was kept
    route = decide.heading if decide else ""
    note = decide.info.get("note", "") if decide and not decide.info.get("fused") else ""
    detail = f"first answer: <b>{esc(before)}</b> → final: <b>{esc(trace.final)}</b>" if changed else \
        (esc(note) if note else f"the first answer stands ({esc(route)})")
    return (f'<div class="final"><div class="final-label">Final decision</div>'
            f'<div class="final-answer">{esc(trace.final)} {tag}</div><div class="final-detail">{detail} · '
            f'{trace.seconds:.2f} s in total</div></div>')


def candidate_html(label: str, key: str, text: str | None, source: str | None) -> str:
    return (f'<div class="cand"><div class="cand-head"><span class="key">{key}</span> Answer {label}'
            f'</div><div class="cand-text">{esc(text) or "&nbsp;"}</div></div>')


def progress_html(p, name: str | None, overlap: int) -> str:
    mine_total = p.mine + p.available
    pct = 100 * p.mine / mine_total if mine_total else 0
    all_pct = 100 * p.done_items / p.total_items if p.total_items else 0
    return (f'<div class="progress"><div><b>You{f" ({esc(name)})" if name else ""}</b>: {p.mine} done · '
            f'{p.available} waiting<progress class="bar" value="{pct:.0f}" max="100"></progress></div>'
            f'<div><b>Everyone</b>: {p.done_items}/{p.total_items} items complete (k={overlap}) · {p.judgments} '
            f'judgments by {p.annotators} annotator(s)<progress class="bar bar-all" value="{all_pct:.0f}" max="100">'
            f'</progress></div></div>')


SHORTCUTS = ('<div class="keys"><span><kbd>1</kbd> A better</span><span><kbd>2</kbd> B better</span>'
             '<span><kbd>3</kbd> tie</span><span><kbd>4</kbd> both bad</span><span><kbd>e</kbd> edit correction</span>'
             '<span><kbd>Enter</kbd> submit correction</span><span><kbd>s</kbd> skip</span><span><kbd>u</kbd> undo</span>'
             '<span><kbd>Esc</kbd> leave the text box</span></div>')

GUIDELINES = """### Guidelines
**The task.** Look at the photo, read the question, then decide which answer is better.

- **A better / B better**: the answer names the right object (for *What's the object in the hand?*) or judges
  visibility correctly (for *Is it clear to identify...?*). Prefer the exact seed form, e.g. `The object is jar.`
- **Tie**: both equally right or equally wrong in the same way.
- **Both bad**: neither is acceptable. Type the right answer in *Corrected answer* first; it becomes training data.
- **Skip**: you cannot tell (the item goes to somebody else).

**Corrected answer.** Pre-filled with answer A. Edit it (press <kbd>e</kbd>), then press <kbd>Enter</kbd>: if it
matches A or B that answer wins, otherwise it counts as *both bad* with your correction.

**Classes**: jar, bottle, cellphone, bowl, knife, camera, can, remote.

**Undo** (<kbd>u</kbd>) takes back your last judgment and shows that item again.
"""

CSS = """
.gradio-container {max-width: 1360px !important; margin: auto;}
#title h1 {margin-bottom: 0; font-size: 1.7rem;}
#title p {margin-top: 2px; color: var(--body-text-color-subdued);}
.banner {padding: 10px 14px; border-radius: 8px; margin: 4px 0; font-size: 0.95rem;}
.banner-info {background: #eef4ff; color: #1e3a8a; border: 1px solid #c7d7fe;}
.banner-warn {background: #fff7e6; color: #7a4b00; border: 1px solid #ffd591;}
.banner-error {background: #fff1f0; color: #a8071a; border: 1px solid #ffa39e;}
.banner-ok {background: #f0fff4; color: #135200; border: 1px solid #b7eb8f;}
.dark .banner-info {background:#1e293b; color:#c7d7fe;} .dark .banner-warn {background:#3b2f14; color:#ffd591;}
.dark .banner-error {background:#3b1414; color:#ffa39e;} .dark .banner-ok {background:#14301c; color:#b7eb8f;}
.steps {display: flex; flex-direction: column; gap: 8px;}
.step {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;
       background: var(--background-fill-primary); animation: fadein .25s ease-in;}
@keyframes fadein {from {opacity: 0; transform: translateY(4px);} to {opacity: 1;}}
.step-head {display: flex; align-items: center; gap: 8px; font-weight: 600;}
.step-no {background: #4f46e5; color: white; border-radius: 50%; width: 22px; height: 22px; display: inline-flex;
          align-items: center; justify-content: center; font-size: .8rem;}
.step-reconstruct .step-no {background: #0d9488;} .step-decide .step-no {background: #ea580c;}
.step-time {margin-left: auto; color: var(--body-text-color-subdued); font-weight: 400; font-size: .85rem;}
.step-heading {color: var(--body-text-color-subdued); font-size: .85rem; margin: 2px 0 6px 30px;}
.step .row {display: flex; gap: 10px; margin: 3px 0 3px 30px; font-size: .92rem;}
.step .k {width: 95px; flex: none; color: var(--body-text-color-subdued);}
.step .raw {background: var(--background-fill-secondary); padding: 1px 6px; border-radius: 4px; word-break: break-all;}
.probs {display: flex; flex-direction: column; gap: 1px; flex: 1; max-width: 340px;}
.probs-row {display: flex; align-items: center; gap: 6px; font-size: .82rem;}
.probs-name {width: 70px;} .probs-p {width: 34px; text-align: right; color: var(--body-text-color-subdued);}
.probs-bar {flex: 1; height: 8px; background: var(--background-fill-secondary); border-radius: 4px; overflow: hidden;}
.probs-bar span {display: block; height: 100%; background: #a5b4fc;}
.probs-answer .probs-name {font-weight: 700;} .probs-answer .probs-bar span {background: #4f46e5;}
.step-pending {color: var(--body-text-color-subdued); font-style: italic; border-style: dashed;}
.pill {display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: .82rem; font-weight: 600;}
.pill-ok {background: #e0e7ff; color: #3730a3;} .pill-bad {background: #fee2e2; color: #991b1b;}
.pill-changed {background: #ffedd5; color: #9a3412;} .pill-kept {background: #dcfce7; color: #166534;}
.final {border: 2px solid #4f46e5; border-radius: 12px; padding: 12px 16px;}
.final-label {text-transform: uppercase; font-size: .75rem; letter-spacing: .08em; color: var(--body-text-color-subdued);}
.final-answer {font-size: 1.5rem; font-weight: 700;}
.final-detail {color: var(--body-text-color-subdued); font-size: .9rem;}
.empty {border: 2px dashed var(--border-color-primary); border-radius: 12px; padding: 28px; text-align: center;
        color: var(--body-text-color-subdued);}
.cand {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px; min-height: 86px;}
.cand-head {font-weight: 600; margin-bottom: 6px; display: flex; align-items: center; gap: 8px;}
.cand-src {margin-left: auto; font-weight: 400; font-size: .8rem; color: var(--body-text-color-subdued);}
.cand-text {font-size: 1.05rem; word-break: break-word;}
.key, kbd {display: inline-block; min-width: 1.4em; text-align: center; padding: 0 6px; border: 1px solid #c9ccd1;
           border-bottom-width: 2px; border-radius: 5px; font-family: ui-monospace, monospace; font-size: .85rem;
           background: var(--background-fill-secondary);}
.keys {display: flex; flex-wrap: wrap; gap: 6px 16px; font-size: .88rem; color: var(--body-text-color-subdued); margin: 6px 0;}
.question {font-size: 1.1rem; font-weight: 600;}
.progress {display: flex; flex-direction: column; gap: 8px; font-size: .92rem;}
.bar {display: block; width: 100%; height: 8px; margin-top: 4px; accent-color: #4f46e5;}
.bar-all {accent-color: #0d9488;}
#choice-row button {font-weight: 600;}
.kappa {font-size: 1.05rem;}
footer {display: none !important;}
"""

SHORTCUT_JS = """
<script>
(() => {
  const keys = {"1": "btn-a", "2": "btn-b", "3": "btn-tie", "4": "btn-bad", "s": "btn-skip", "u": "btn-undo",
                "enter": "btn-submit"};
  document.addEventListener("keydown", (event) => {
    const panel = document.getElementById("annotate-panel");
    if (!panel || panel.offsetParent === null) return;          // only on the Annotate tab
    const target = event.target;
    const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
    if (typing) { if (event.key === "Escape") target.blur(); return; }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.toLowerCase();
    if (key === "e") {
      const box = document.querySelector("#correction textarea, #correction input");
      if (box) { event.preventDefault(); box.focus(); box.select(); }
      return;
    }
    const id = keys[key];
    const button = id && document.getElementById(id);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""
