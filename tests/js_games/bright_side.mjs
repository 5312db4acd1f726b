// A JavaScript test game with camera pixels (protocol 2): BrightSide (tests/image_test_envs.py) in Node.
// A 16x16 RGB uint8 frame (HWC) with a bright 6x6 patch on its left or right half; action 0 says left,
// 1 right; reward 1 for the right answer; episodes of 8 frames. Only the pixels tell the side.
//   node tests/js_games/bright_side.mjs --port P --instance I [--dict 1] [--protocol 1]
// --dict 1: the frame in a Dict beside the step as a fraction (float32 [1]) and the step count (int32 [1]).
// --protocol 1: a version 1 game (the frame as float32 numbers 0..255).
import { serve, agent, discrete, obsBox, dictObs, parseArgs, seededRandom } from "../../exports/js/agentkit-bridge.mjs";

const SIZE = 16;
const EPISODE = 8;
const args = parseArgs();
const dict = args.dict === "1";
const protocol = Number(args.protocol ?? 2);
let rng = seededRandom(args.seed);
let t = 0;
let side = 0;
let img = null;

function frame() {
  img = protocol >= 2 ? new Uint8Array(SIZE * SIZE * 3) : new Float32Array(SIZE * SIZE * 3);
  for (let i = 0; i < img.length; i++) img[i] = Math.floor(rng() * 60);
  side = rng() < 0.5 ? 0 : 1;
  const col = side === 0 ? 1 : SIZE / 2 + 1;
  const row = Math.floor(rng() * (SIZE - 6));
  for (let r = row; r < row + 6; r++) for (let c = col; c < col + 6; c++) for (let k = 0; k < 3; k++) img[(r * SIZE + c) * 3 + k] = 250;
}

const observe = () => [dict ? { frame: img, t: [t / EPISODE], count: [t] } : img];

const game = {
  reset(seed) {
    if (seed != null) rng = seededRandom(seed);
    t = 0;
    frame();
    return { obs: observe() };
  },
  step([action]) {
    const reward = action === side ? 1 : 0;
    t += 1;
    frame();
    return { obs: observe(), reward: [reward], terminated: [false], truncated: [t >= EPISODE] };
  },
};

const pixels = protocol >= 2 ? obsBox([SIZE, SIZE, 3], "uint8") : obsBox([SIZE, SIZE, 3], "float32", 0, 255);
const observation = dict
  ? dictObs({ frame: pixels, t: obsBox([1], "float32", 0, 1), count: obsBox([1], "int32", 0, EPISODE) })
  : pixels;
await serve(game, { name: "bright-side-js", agents: [agent("eye", observation, discrete(2))], host: args.host,
  port: args.port, transport: args.transport, instance: args.instance, protocol });
