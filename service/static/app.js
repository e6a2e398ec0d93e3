// squad-qa web page: POST the passage and question to /v1/answer, highlight the answer.
// Offsets from the API count Unicode code points (Python str indices); JavaScript strings count
// UTF-16 units, so the passage is split with Array.from before slicing (emoji stay intact).
"use strict";

(function () {
  const form = document.getElementById("qa-form");
  const context = document.getElementById("context");
  const question = document.getElementById("question");
  const result = document.getElementById("result");
  const status = document.getElementById("status");
  const answerLine = document.getElementById("answer-line");
  const answerText = document.getElementById("answer-text");
  const answerScore = document.getElementById("answer-score");
  const passage = document.getElementById("passage");
  let inFlight = null;

  function showStatus(message, isError) {
    status.textContent = message;
    status.classList.toggle("error", Boolean(isError));
  }

  function render(ctx, answer) {
    const chars = Array.from(ctx);
    passage.replaceChildren(
      document.createTextNode(chars.slice(0, answer.start).join("")),
      Object.assign(document.createElement("mark"), {
        id: "answer-mark",
        textContent: chars.slice(answer.start, answer.end).join(""),
      }),
      document.createTextNode(chars.slice(answer.end).join(""))
    );
    passage.hidden = false;
    answerText.textContent = answer.text;
    answerScore.textContent = answer.score.toFixed(3);
    answerLine.hidden = false;
    const mark = document.getElementById("answer-mark");
    if (mark.scrollIntoView) mark.scrollIntoView({ block: "nearest" });
  }

  function clearAnswer() {
    answerLine.hidden = true;
    passage.hidden = true;
    passage.replaceChildren();
  }

  async function ask() {
    const ctx = context.value;
    const q = question.value;
    if (!ctx.trim()) { showStatus("Please paste a passage first.", true); context.focus(); return; }
    if (!q.trim()) { showStatus("Please type a question.", true); question.focus(); return; }
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    clearAnswer();
    result.setAttribute("aria-busy", "true");
    showStatus("Reading the passage…", false);
    try {
      const response = await fetch("v1/answer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question: q, context: ctx }),
        signal: controller.signal,
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        const why = body && body.message ? body.message : `HTTP ${response.status}`;
        showStatus(`Could not answer: ${why}`, true);
        return;
      }
      const best = body.answers[0];
      if (!best || best.text === "") {
        showStatus("No answer found in the passage.", false);
        return;
      }
      showStatus(`Answer found in ${Math.round(body.took_ms)} ms:`, false);
      render(ctx, best);
    } catch (err) {
      if (err.name !== "AbortError") showStatus(`Could not reach the service: ${err.message}`, true);
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        result.removeAttribute("aria-busy");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in the question box lands here
    ask();
  });
  // Enter in a textarea is a newline, so the passage box submits with Ctrl+Enter (Cmd+Enter on a Mac).
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      ask();
    }
  });
})();
