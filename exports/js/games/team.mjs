// Team Forage: a small multi-agent JavaScript game with masked actions, trained over the bridge with MAPPO.
//
//   node exports/js/games/team.mjs --port 11008 [--agents 3] [--size 6] [--food 4] [--instances 1]
//   (examples/bridge-team-node.yaml launches it with --port {port} --instance {instance})
//
// A team of foragers on a size x size grid with `food` items. Each step every living forager moves
// (0 up, 1 down, 2 left, 3 right) or eats (4) the item it stands on. The mask forbids moving off the grid
// and eating where there is nothing. A forager has `energy` steps to live; eating an item restores it. A
// forager whose energy runs out starves: it terminates and leaves the game while the others play on
// (the trainer sees it dead: alive 0). Reward, per forager: +1 for each item it eats, -0.01 per step.
// The episode ends when every forager has starved (terminated), when all food is eaten (every living
// forager terminates), or after `maxSteps` (truncated).
//
// Observation per forager (3 + 3 * food floats): its x, y (in [0, 1]), energy left (fraction), then for
// every item in a fixed order: present (0/1), dx, dy (item minus forager, / size). Info: `eaten`, the items
// this forager has eaten this episode.

import { agent, discrete, parseArgs, seededRandom, serveMany } from "../agentkit-bridge.mjs";

const MOVES = [[0, -1], [0, 1], [-1, 0], [1, 0]];
const EAT = 4;

export class TeamForage {
  constructor({ agents = 3, size = 6, food = 4, energy = 10, maxSteps = 40 } = {}) {
    Object.assign(this, { nAgents: agents, size, nFood: food, energy, maxSteps });
    this.rng = seededRandom(0);
    this.obsSize = 3 + 3 * food;
    this.specs = Array.from({ length: agents }, (_, i) =>
      agent(`forager_${i}`, [this.obsSize], discrete(5), { mask: true, low: -1, high: 1 }));
  }

  cell() { return Math.floor(this.rng() * this.size); }

  reset(seed) {
    if (seed != null) this.rng = seededRandom(seed);
    this.x = Array.from({ length: this.nAgents }, () => this.cell());
    this.y = Array.from({ length: this.nAgents }, () => this.cell());
    this.left = new Array(this.nAgents).fill(this.energy);
    this.alive = new Array(this.nAgents).fill(true);
    this.eaten = new Array(this.nAgents).fill(0);
    this.fx = Array.from({ length: this.nFood }, () => this.cell());
    this.fy = Array.from({ length: this.nFood }, () => this.cell());
    this.present = new Array(this.nFood).fill(true);
    this.steps = 0;
    return this.result();
  }

  foodAt(x, y) {
    for (let f = 0; f < this.nFood; f++) if (this.present[f] && this.fx[f] === x && this.fy[f] === y) return f;
    return -1;
  }

  observation(obs, a) {
    const base = a * this.obsSize;
    const s = this.size;
    obs[base] = this.x[a] / (s - 1);
    obs[base + 1] = this.y[a] / (s - 1);
    obs[base + 2] = this.left[a] / this.energy;
    for (let f = 0; f < this.nFood; f++) {
      const o = base + 3 + 3 * f;
      if (!this.present[f]) continue;
      obs[o] = 1;
      obs[o + 1] = (this.fx[f] - this.x[a]) / s;
      obs[o + 2] = (this.fy[f] - this.y[a]) / s;
    }
  }

  result() {
    const n = this.nAgents;
    const obs = new Float32Array(n * this.obsSize);
    const mask = new Uint8Array(n * 5).fill(1);
    for (let a = 0; a < n; a++) {
      if (!this.alive[a]) continue; // a forager that is not in the game: zeros
      this.observation(obs, a);
      const m = a * 5;
      mask[m] = this.y[a] > 0 ? 1 : 0;
      mask[m + 1] = this.y[a] < this.size - 1 ? 1 : 0;
      mask[m + 2] = this.x[a] > 0 ? 1 : 0;
      mask[m + 3] = this.x[a] < this.size - 1 ? 1 : 0;
      mask[m + EAT] = this.foodAt(this.x[a], this.y[a]) >= 0 ? 1 : 0;
    }
    return { obs, mask, alive: Uint8Array.from(this.alive, (v) => (v ? 1 : 0)) };
  }

  /** `actions`: one per forager (dead foragers' are ignored). */
  step(actions) {
    const n = this.nAgents;
    const reward = new Float32Array(n);
    const terminated = new Uint8Array(n);
    const truncated = new Uint8Array(n);
    const acted = this.alive.slice();
    for (let a = 0; a < n; a++) {
      if (!acted[a]) continue;
      reward[a] = -0.01;
      const act = actions[a];
      if (act === EAT) {
        const f = this.foodAt(this.x[a], this.y[a]);
        if (f >= 0) {
          this.present[f] = false;
          reward[a] += 1;
          this.eaten[a] += 1;
          this.left[a] = this.energy + 1;
        }
      } else if (act >= 0 && act < 4) {
        this.x[a] = Math.min(Math.max(this.x[a] + MOVES[act][0], 0), this.size - 1);
        this.y[a] = Math.min(Math.max(this.y[a] + MOVES[act][1], 0), this.size - 1);
      }
      this.left[a] -= 1;
      if (this.left[a] <= 0) {
        terminated[a] = 1;
        this.alive[a] = false;
      }
    }
    this.steps += 1;
    const foodLeft = this.present.some((p) => p);
    for (let a = 0; a < n; a++) {
      if (!this.alive[a]) continue;
      if (!foodLeft) terminated[a] = 1;
      else if (this.steps >= this.maxSteps) truncated[a] = 1;
      if (terminated[a] || truncated[a]) this.alive[a] = false;
    }
    const out = this.result();
    // a forager that has just left gets its last observation (result() zeroes foragers not in the game)
    for (let a = 0; a < n; a++) if (acted[a] && !this.alive[a]) this.observation(out.obs, a);
    return { ...out, reward, terminated, truncated, info: { eaten: Float32Array.from(this.eaten) } };
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = parseArgs();
  const games = Array.from({ length: args.instances }, () => new TeamForage({ agents: Number(args.agents ?? 3),
    size: Number(args.size ?? 6), food: Number(args.food ?? 4), energy: Number(args.energy ?? 10),
    maxSteps: Number(args.maxSteps ?? 40) })); // --instances N: N games on one connection
  await serveMany(games, { name: "team-forage-js", agents: games[0].specs, host: args.host, port: args.port,
    transport: args.transport, instance: args.instance, token: args.token, connectTimeoutMs: args.connectTimeoutMs });
}
