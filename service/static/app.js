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
  const modelLine = document.getElementById("model-line");
  let inFlight = null;

  // A few passages to try (written for this page), each with a question it answers.
  const EXAMPLES = [
    {
      context: "The Great Barrier Reef is the largest coral reef system in the world. It lies in the Coral Sea, " +
        "off the coast of Queensland, Australia, and stretches for more than 2,300 kilometres. It can be seen " +
        "from outer space, and it was declared a World Heritage Site in 1981.",
      question: "When was the reef declared a World Heritage Site?",
    },
    {
      context: "Marie Curie was a physicist and chemist who did pioneering research on radioactivity. Born in " +
        "Warsaw in 1867, she moved to Paris to study at the University of Paris, where she later became the " +
        "first woman to be a professor. She was the first woman to win a Nobel Prize, and she remains the only " +
        "person to have won Nobel Prizes in two different sciences, physics and chemistry.",
      question: "In which city was Marie Curie born?",
    },
    {
      context: "Python is a programming language created by Guido van Rossum and first released in 1991. Its " +
        "design emphasises readability, most visibly through its use of significant indentation. The name comes " +
        "from the British comedy group Monty Python rather than from the snake.",
      question: "Where does the name Python come from?",
    },
  ];

  // Which model answers: its name, base encoder and recorded dev scores (GET /v1/model).
  async function describeModel() {
    try {
      const response = await fetch("v1/model");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const info = await response.json();
      let line = `Answering with ${info.name}`;
      if (info.base && info.teacher) line += ` (${info.base}, distilled from ${info.teacher})`;
      else if (info.base) line += ` (fine-tuned from ${info.base})`;
      else if (info.teacher) line += ` (distilled from ${info.teacher})`;
      const m = info.metrics || {};
      const em = m.exact_match ?? m.exact;
      if (em != null && m.f1 != null) {
        const n = m.num_questions ? ` on ${m.num_questions.toLocaleString("en")} SQuAD dev questions` : "";
        line += `: EM ${em.toFixed(1)} / F1 ${m.f1.toFixed(1)}${n}`;
      }
      modelLine.textContent = line + ".";
    } catch (err) {
      modelLine.textContent = `Could not describe the model: ${err.message}`;
    }
  }

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

  // Several passages: separated by a line of three dashes. Each is sent with an id ("passage 1", ...)
  // and the answer names the one it came from.
  function splitPassages(text) {
    return text.split(/^[ \t]*---[ \t]*$/m).map((part) => part.trim()).filter((part) => part);
  }

  async function ask() {
    const ctx = context.value;
    const parts = splitPassages(ctx);
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
        body: JSON.stringify(parts.length > 1
          ? { question: q, contexts: parts.map((text, i) => ({ id: `passage ${i + 1}`, text })) }
          : { question: q, context: ctx }),
        signal: controller.signal,
      });
      const body = await response.json().catch(() => null);
      if (!response.ok) {
        const why = body && body.message ? body.message : `HTTP ${response.status}`;
        showStatus(`Could not answer: ${why}`, true);
        return;
      }
      if (body.no_answer && body.best_rejected_score !== null) {
        showStatus(`No answer: the best candidate scores ${body.best_rejected_score.toFixed(3)}, below the minimum.`, false);
        return;
      }
      const best = body.answers[0];
      if (!best || best.text === "") {
        showStatus("No answer found in the passage.", false);
        return;
      }
      const from = best.passage_id ? ` in ${best.passage_id} of ${parts.length}` : "";
      showStatus(`Answer found${from} in ${Math.round(body.took_ms)} ms:`, false);
      render(best.passage_id ? parts[Number(best.passage_id.split(" ")[1]) - 1] : ctx, best);
    } catch (err) {
      if (err.name !== "AbortError") showStatus(`Could not reach the service: ${err.message}`, true);
    } finally {
      if (inFlight === controller) {
        inFlight = null;
        result.removeAttribute("aria-busy");
      }
    }
  }

  for (const button of document.querySelectorAll("button.example")) {
    button.addEventListener("click", () => {
      const example = EXAMPLES[Number(button.dataset.example)];
      context.value = example.context;
      question.value = example.question;
      ask();
    });
  }
  describeModel();

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
