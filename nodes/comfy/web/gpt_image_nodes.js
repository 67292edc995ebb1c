// GPT Image 2 nodes: a new node's seed starts on "fixed", not the frontend's "randomize".
// The API takes no seed, so randomize would send a new paid request on every queue; with
// "fixed", ComfyUI's cache reuses the last result until an input really changes.
// Runs in nodeCreated, before a saved workflow's values are applied, so saved choices win.
import { app } from "../../scripts/app.js";

const NODE_TYPES = new Set([
  "GPTImage2TextToImage",
  "GPTImage2EditImage",
  "GPTImage2MultiMerge",
  "GPTImage2Describe",
]);

app.registerExtension({
  name: "gpt_image_nodes.fixedSeed",
  nodeCreated(node) {
    if (!NODE_TYPES.has(node.comfyClass ?? node.type)) return;
    const seed = node.widgets?.find((w) => w.name === "seed");
    for (const w of seed?.linkedWidgets ?? node.widgets ?? []) {
      if (w.name === "control_after_generate") w.value = "fixed";
    }
  },
});
