# The Maze game's rules (no nodes, no drawing): walk to the goal through a 7 x 7 maze.
#
# Action: Discrete(4), 0 up, 1 down, 2 left, 3 right, with a mask: a move into a wall or off the board is
# not allowed. Observation, 11 floats: agent x, y and goal x, y (0..1), the goal's offset dx, dy (-1..1),
# the four "this move is free" flags, and the elapsed fraction of the time limit.
# Reward: -0.01 a step, +0.1 for each step closer to the goal along the maze's shortest path (-0.1 for
# each step away), +1 on reaching the goal (terminated). Truncated after `max_steps`.
# benchmarks/engines_games.py has the same game in Python (the in-process figure beside Godot's).
extends Reference

const SIZE = 7
const LAYOUT = [
	".......",
	".##.##.",
	".....#.",
	"##.#...",
	"...##.#",
	".#.....",
	".#.##..",
]
const MOVES = [Vector2(0, -1), Vector2(0, 1), Vector2(-1, 0), Vector2(1, 0)]
const OBS_SIZE = 11

var max_steps = 40
var rng = RandomNumberGenerator.new()
var agent = Vector2()
var goal = Vector2()
var steps = 0
var illegal_moves = 0  # moves into a wall this episode (the mask forbids them: a masked policy makes none)
var distance = {}      # shortest-path distance to the goal of every free cell (Vector2 -> int)
var free_cells = []

func _init():
	for y in SIZE:
		for x in SIZE:
			if LAYOUT[y][x] == ".":
				free_cells.append(Vector2(x, y))

func is_free(cell: Vector2) -> bool:
	return cell.x >= 0 and cell.y >= 0 and cell.x < SIZE and cell.y < SIZE and LAYOUT[int(cell.y)][int(cell.x)] == "."

func reset(new_seed) -> void:
	if new_seed != null:
		rng.seed = new_seed
	goal = free_cells[rng.randi_range(0, free_cells.size() - 1)]
	agent = goal
	while agent == goal:
		agent = free_cells[rng.randi_range(0, free_cells.size() - 1)]
	steps = 0
	illegal_moves = 0
	_measure()

# Advance one step; returns [reward, terminated, truncated].
func step(action: int) -> Array:
	var before = distance[agent]
	var target = agent + MOVES[action]
	if is_free(target):
		agent = target
	else:
		illegal_moves += 1
	steps += 1
	var reached = agent == goal
	var reward = -0.01 + 0.1 * (before - distance[agent])
	if reached:
		reward += 1.0
	return [reward, reached, not reached and steps >= max_steps]

func mask() -> PoolByteArray:
	var m = PoolByteArray()
	for move in MOVES:
		m.append(1 if is_free(agent + move) else 0)
	return m

func observe() -> PoolRealArray:
	var s = float(SIZE - 1)
	var o = PoolRealArray([agent.x / s, agent.y / s, goal.x / s, goal.y / s, (goal.x - agent.x) / s, (goal.y - agent.y) / s])
	for move in MOVES:
		o.append(1.0 if is_free(agent + move) else 0.0)
	o.append(float(steps) / max_steps)
	return o

# Breadth-first distances from the goal (the maze is connected).
func _measure() -> void:
	distance = {goal: 0}
	var queue = [goal]
	while queue.size() > 0:
		var cell = queue.pop_front()
		for move in MOVES:
			var next = cell + move
			if is_free(next) and not distance.has(next):
				distance[next] = distance[cell] + 1
				queue.append(next)
