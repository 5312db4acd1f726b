# agentkit bridge client for Godot 3.x (GDScript), protocol version 2 over TCP (docs/bridge.md; set
# `bridge.protocol = 1` before `start` to speak version 1, float32 observations only).
#
# Copy this folder (addons/agentkit/) into your project. The game gives the client an object (`game`)
# with three methods, and calls `poll()` from its own _process:
#
#   game.bridge_agents() -> Array     the agents as docs/bridge.md's `hello.agents` (a Dictionary each)
#   game.bridge_reset(new_seed, params) -> Dictionary   {obs: PoolRealArray, alive: PoolByteArray[, mask: PoolByteArray]}
#
# Observations of other dtypes (protocol 2: an agent's observation {"shape": [64, 64, 3], "dtype": "uint8"},
# or a Dict {"kind": "dict", "entries": [...]}) travel in their own blobs: the result's `obs_uint8`
# (PoolByteArray: camera pixels, e.g. Image.get_data() of an RGB8 image) and `obs_int32` (PoolIntArray) beside
# `obs` (the float32 values), every agent's values of that dtype in order. Give each key whose dtype some agent
# declares, and only those.
#   game.bridge_step(action_int: PoolIntArray, action_float: PoolRealArray) -> Dictionary
#       {obs, reward: PoolRealArray, terminated, truncated, alive: PoolByteArray[, mask][, info: PoolRealArray,
#        info_keys: Array]}
#
# `seed` is an int or null (keep the generator as it is); `params` the run config's env.params.
# The arrays are the blobs of reset_result / step_result, agents in `bridge_agents()` order.
#
#   var bridge = preload("res://addons/agentkit/bridge.gd").new()
#   bridge.start(self, "my-game", "127.0.0.1", port, instance)   # instance: int, or null for listen mode
#   func _process(_delta): bridge.poll(50)                         # handle messages for up to 50 ms
#
# poll() blocks while it waits for the trainer (a training game runs as fast as the trainer steps it);
# between frames Godot renders, so a game watched in the editor still draws.
#
# A game started before the trainer listens (listen mode: Play pressed before `agentkit train`) keeps trying:
# while nothing listens at host:port, `start` returns OK with `connecting` true, and each poll() (it returns
# true meanwhile, without waiting) connects again every 0.2 s, for up to `connect_timeout` seconds (30;
# `connect_timeout_of(settings)` reads `--connect-timeout=SECONDS` / AGENTKIT_BRIDGE_CONNECT_TIMEOUT). Then
# poll() returns false with `error` saying so. So call poll() from _process from `start` on.
#
# Several instances in one process (docs/bridge.md, "Several instances on one connection"; what
# `env.instances_per_process` launches): `bridge.start_many([game0, game1, ...], "my-game", host, port, instance)`
# serves game k as instance `instance + k` on one connection. The hello says "instances": K; then every message
# both ways is a `batch`, and poll() answers each batch of requests with one batch. `instance_count(settings)`
# reads K from `--instances=N` / AGENTKIT_BRIDGE_INSTANCES; `launch_settings()` reads all a launched game gets.
extends Reference

const PROTOCOL = 2
const OBS_BLOBS = [["obs", "float32"], ["obs_uint8", "uint8"], ["obs_int32", "int32"]]
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024
const DTYPE_SIZE = {"float32": 4, "int32": 4, "uint8": 1}
const MAX_INSTANCES = 1024   # the most instances one connection may serve (hello.instances)
const SETTINGS = ["port", "host", "instance", "instances", "token", "seed", "connect-timeout"]
const RETRY_MSEC = 200       # how often a refused connection is tried again
const FIRST_TRY_MSEC = 500   # how long start() waits for the first try's answer before poll() takes over

var tcp = StreamPeerTCP.new()
var protocol = PROTOCOL   # the version the hello says: 2, or 1
var games = []            # the game objects this connection serves: games[k] is instance `instance + k`
var open_slots = []       # open_slots[k]: the trainer has not closed instance k yet
var instance = null       # the first instance's number (the trainer's, once welcomed)
var max_frame_bytes = DEFAULT_MAX_FRAME
var spin_usec = 0         # the welcome's spin_us: how long a read waits awake for the trainer's frame (_await_frame)
var connect_timeout = 30.0   # seconds to keep trying while nothing listens at host:port (set before `start`)
var connecting = false    # nothing listened at the last try: poll() tries again (until connect_timeout)
var connected = false     # the trainer sent `welcome`
var closed = false        # the trainer closed every instance, or the connection ended
var close_reason = ""
var error = ""            # why the client stopped, when an error stopped it (its own or the trainer's); else ""
var steps = 0             # step messages answered (all instances together)
var episodes = 0          # reset messages answered (all instances together)
var _host = ""            # where the trainer is, the hello to say there, and the tries' clock (msec)
var _port = 0
var _hello = {}
var _give_up_at = 0
var _retry_at = 0

# -- settings of a launched game ----------------------------------------------------------------------------

# What a launched game is told: `--port=N` style options on the command line (after the engine's own), else the
# AGENTKIT_BRIDGE_* environment variables `agentkit train` sets; "" for a setting neither gives. Keys: port,
# host, instance, instances, token, seed, connect-timeout, and every other `--key=value` option of the command line.
static func launch_settings() -> Dictionary:
	var s = {}
	for key in SETTINGS:
		s[key] = OS.get_environment("AGENTKIT_BRIDGE_" + key.to_upper().replace("-", "_"))
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--") and "=" in arg:
			var kv = arg.substr(2).split("=", true, 1)
			s[kv[0]] = kv[1]
	return s

# How many instances `settings.instances` asks this process to serve (1 when it is "" or missing), or 0 after
# printing why it cannot be used (not a whole number from 1 to MAX_INSTANCES): the game should then exit non-zero.
static func instance_count(settings: Dictionary) -> int:
	var text = str(settings.get("instances", "")).strip_edges()
	if text == "":
		return 1
	if not text.is_valid_integer() or int(text) < 1 or int(text) > MAX_INSTANCES:
		printerr("agentkit bridge: --instances (or AGENTKIT_BRIDGE_INSTANCES) is '%s': give a whole number from 1 to %d" % [text, MAX_INSTANCES])
		return 0
	return int(text)

# The seconds `settings["connect-timeout"]` gives the client to find the trainer listening (30 when it is "" or
# missing), or 0.0 after printing why it cannot be used (not a number above 0): the game should then exit non-zero.
static func connect_timeout_of(settings: Dictionary) -> float:
	var text = str(settings.get("connect-timeout", "")).strip_edges()
	if text == "":
		return 30.0
	if not text.is_valid_float() or float(text) <= 0:
		printerr("agentkit bridge: --connect-timeout (or AGENTKIT_BRIDGE_CONNECT_TIMEOUT) is '%s': give a number of seconds above 0" % text)
		return 0.0
	return float(text)

# -- the game's side --------------------------------------------------------------------------------------

# Connect to the trainer and say hello; returns OK or an error code (the reason is printed). OK with
# `connecting` true: nothing listens yet, and poll() tries again (the top of this file).
func start(game_object, game_name: String, host: String, port: int, instance_number = null, token = null) -> int:
	return start_many([game_object], game_name, host, port, instance_number, token)

# `start` for several game objects on one connection: game_objects[k] is instance `instance_number + k` (every one
# declares the same agents: the hello sends the first one's). One object: the same as `start` (no batches).
func start_many(game_objects: Array, game_name: String, host: String, port: int, instance_number = null, token = null) -> int:
	if game_objects.empty() or game_objects.size() > MAX_INSTANCES:
		return _fail("start_many serves 1 to %d game objects; got %d" % [MAX_INSTANCES, game_objects.size()])
	games = game_objects
	open_slots = []
	for _g in games:
		open_slots.append(true)
	instance = instance_number
	_host = host
	_port = port
	_hello = {"type": "hello", "protocol": protocol, "game": game_name, "instance": instance,
		"token": token, "agents": games[0].bridge_agents(), "state_dim": 0}
	if games.size() > 1:
		_hello["instances"] = games.size()
	_give_up_at = OS.get_ticks_msec() + int(connect_timeout * 1000)
	var err = _try_connect()
	if err != OK:
		return err
	var first_wait_ends = OS.get_ticks_msec() + FIRST_TRY_MSEC
	# the first try: a local trainer (or its absence) answers at once; a host that does not answer is poll()'s
	while tcp.get_status() == StreamPeerTCP.STATUS_CONNECTING and OS.get_ticks_msec() < first_wait_ends:
		OS.delay_msec(1)
	return _go_on_connecting()

# One try at the trainer's address (its answer comes later: tcp's status).
func _try_connect() -> int:
	tcp.disconnect_from_host()
	var err = tcp.connect_to_host(_host, _port)
	if err != OK:
		return _fail("cannot connect to %s:%d (error %d)" % [_host, _port, err])
	return OK

# Where the last try stands: connected: say hello and wait for the welcome; refused (nothing listens yet): try
# again RETRY_MSEC later (`connecting` stays true meanwhile), until connect_timeout has passed. Returns OK, or an
# error code (the reason is printed).
func _go_on_connecting() -> int:
	var status = tcp.get_status()
	connecting = status != StreamPeerTCP.STATUS_CONNECTED
	if status == StreamPeerTCP.STATUS_CONNECTED:
		return _greet()
	var now = OS.get_ticks_msec()
	if status == StreamPeerTCP.STATUS_CONNECTING:
		if now < _give_up_at:
			return OK
		connecting = false
		tcp.disconnect_from_host()
		return _fail("cannot connect to %s:%d: no answer for %s s (nothing accepted the connection: is the address right, is a firewall dropping it, is the trainer busy?): check --host/--port, or raise --connect-timeout" % [_host, _port, str(connect_timeout)])
	if _retry_at == 0:   # this try was just refused
		if now >= _give_up_at:
			connecting = false
			return _fail("cannot connect to %s:%d: nothing listened there for %s s (connection refused): start `agentkit train` with env.mode: listen first, or raise --connect-timeout" % [_host, _port, str(connect_timeout)])
		_retry_at = min(now + RETRY_MSEC, _give_up_at)
	elif now >= _retry_at:
		_retry_at = 0
		return _try_connect()
	return OK

# Say hello on the open connection and take the trainer's welcome.
func _greet() -> int:
	tcp.set_no_delay(true)
	tcp.set_big_endian(false)
	_send(_hello, [])
	var msg = _receive()
	if msg == null:
		return FAILED
	if msg.header.get("type") != "welcome":
		return _fail("the trainer refused the game: %s" % to_json(msg.header))
	var welcomed = msg.header.get("instance")   # null: several instances in listen mode, numbered by the trainer
	instance = null if welcomed == null else int(welcomed)
	max_frame_bytes = int(msg.header.get("max_frame_bytes", DEFAULT_MAX_FRAME))
	spin_usec = int(msg.header.get("spin_us", 0))
	connected = true
	return OK

# Answer the trainer's messages for up to `budget_msec` milliseconds (at least one message is waited for).
# Returns false once the connection is closed (the game should then quit, if it was launched).
func poll(budget_msec := 50) -> bool:
	if closed:
		return false
	if connecting:   # nothing listened at the last try: move the next one on, without waiting
		return _go_on_connecting() == OK
	var start_ms = OS.get_ticks_msec()
	while true:
		var msg = _receive()
		if msg == null:
			return false
		if games.size() == 1:
			_handle(msg)
		else:
			_handle_batch(msg)
		if closed or OS.get_ticks_msec() - start_ms >= budget_msec:
			break
	return not closed

# -- messages -----------------------------------------------------------------------------------------------

# One instance on the connection: every message is its own.
func _handle(msg) -> void:
	var answer = _answer(0, msg)
	if answer != null:
		_send_payload(answer)
	elif not open_slots[0] and not closed:
		_close()

# Several: every message is a batch (docs/bridge.md, "Several instances on one connection"); its requests are
# answered in one batch for the same slots, a `close` needs no answer, and the connection closes with the last.
func _handle_batch(msg) -> void:
	var header = msg.header
	var kind = header.get("type")
	if kind == "error":   # sent as itself: it stops every instance
		_answer(0, msg)
		return
	if kind != "batch":
		_refuse("unexpected_message", "a connection of %d instances expects a batch after the welcome, not a %s message" % [games.size(), str(kind)], "type")
		return
	var slots = header.get("slots")
	var sizes = header.get("sizes")
	var parts = msg.blobs.get("parts", PoolByteArray())
	if typeof(slots) != TYPE_ARRAY or typeof(sizes) != TYPE_ARRAY or slots.size() != sizes.size() \
			or not _whole_numbers(slots, games.size() - 1) or not _whole_numbers(sizes, parts.size()):
		_refuse("bad_frame", "a batch for %d instances needs 'slots' (each 0 .. %d) and 'sizes' (bytes), lists of the same length; got slots %s, sizes %s" % [games.size(), games.size() - 1, to_json(slots), to_json(sizes)], "slots")
		return
	var total = 0
	for size in sizes:
		total += int(size)
	if msg.blobs.size() != (1 if msg.blobs.has("parts") else 0) or typeof(parts) != TYPE_RAW_ARRAY or total != parts.size():
		_refuse("bad_frame", "a batch's one blob is 'parts' with sum(sizes) = %d bytes; got blobs %s of %d bytes" % [total, to_json(msg.blobs.keys()), parts.size()], "parts")
		return
	var answered = []
	var answer_sizes = []
	var answers = PoolByteArray()
	var at = 0
	for i in slots.size():
		var slot = int(slots[i])
		var size = int(sizes[i])
		var request = _decode(parts.subarray(at, at + size - 1) if size > 0 else PoolByteArray())
		at += size
		if request == null:
			return
		var answer = _answer(slot, request)
		if closed:   # an error stopped the connection
			return
		if answer != null:
			answered.append(slot)
			answer_sizes.append(answer.size())
			answers.append_array(answer)
	if not answered.empty():
		_send({"type": "batch", "slots": answered, "sizes": answer_sizes}, [["parts", "uint8", answers]])
	if not open_slots.has(true):
		_close()

# Whether every value is a whole number from 0 to `highest` (JSON gives Godot every number as a float).
func _whole_numbers(values: Array, highest: int) -> bool:
	for v in values:
		if not (typeof(v) == TYPE_INT or typeof(v) == TYPE_REAL) or v != floor(v) or v < 0 or v > highest:
			return false
	return true

# The answer payload to instance `slot`'s request `msg` (a reset_result or step_result), or null: for a `close`
# (that slot is then closed) and for messages that stop the connection (the trainer's error, an unknown one).
func _answer(slot: int, msg):
	var game = games[slot]
	var kind = msg.header.get("type")
	if kind == "reset":
		var new_seed = msg.header.get("seed")
		if new_seed != null:
			new_seed = int(new_seed)
		var params = msg.header.get("params", {})
		var r = game.bridge_reset(new_seed, params if params != null else {})
		episodes += 1
		var blobs = _obs_blobs(r)
		blobs.append(["alive", "uint8", r.alive])
		if r.has("mask"):
			blobs.append(["mask", "uint8", r.mask])
		return _encode({"type": "reset_result"}, blobs)
	elif kind == "step":
		var r = game.bridge_step(PoolIntArray(msg.blobs.get("action_int", [])), PoolRealArray(msg.blobs.get("action_float", [])))
		steps += 1
		var blobs = _obs_blobs(r)
		blobs += [["reward", "float32", r.reward], ["terminated", "uint8", r.terminated],
			["truncated", "uint8", r.truncated], ["alive", "uint8", r.alive]]
		if r.has("mask"):
			blobs.append(["mask", "uint8", r.mask])
		var header = {"type": "step_result"}
		if r.has("info"):
			blobs.append(["info", "float32", r.info])
			header["info_keys"] = r.info_keys
		return _encode(header, blobs)
	elif kind == "close":
		close_reason = str(msg.header.get("reason", ""))
		open_slots[slot] = false
	elif kind == "error":
		error = "the trainer reported %s: %s" % [msg.header.get("code"), msg.header.get("message")]
		printerr("agentkit bridge: " + error)
		_close()
	else:
		_refuse("unexpected_message", "the game did not expect a %s message here" % str(kind), "type")
	return null

# The observation blobs of a reset or step result: each of obs / obs_uint8 / obs_int32 the game gave.
func _obs_blobs(r: Dictionary) -> Array:
	var blobs = []
	for b in OBS_BLOBS:
		if r.has(b[0]):
			blobs.append([b[0], b[1], r[b[0]]])
	return blobs

# -- framing ------------------------------------------------------------------------------------------------

# blobs: Array of [name, dtype, array]. The payload of one message: u32 header length | header | blobs.
func _encode(header: Dictionary, blobs: Array) -> PoolByteArray:
	var listed = []
	for b in blobs:
		listed.append({"name": b[0], "dtype": b[1], "count": b[2].size()})
	header["blobs"] = listed
	var text = to_json(header).to_utf8()
	var body = StreamPeerBuffer.new()
	body.big_endian = false
	body.put_u32(text.size())
	body.put_data(text)
	for b in blobs:
		var values = b[2]
		if b[1] == "float32":
			for v in values:
				body.put_float(v)
		elif b[1] == "int32":
			for v in values:
				body.put_32(v)
		elif typeof(values) == TYPE_RAW_ARRAY:   # a PoolByteArray (pixels, a batch's parts): all its bytes at once
			body.put_data(values)
		else:
			for v in values:
				body.put_u8(v)
	return body.data_array

func _send(header: Dictionary, blobs: Array) -> void:
	_send_payload(_encode(header, blobs))

# One TCP frame, written at once: u32 length | payload.
func _send_payload(payload: PoolByteArray) -> void:
	var frame = StreamPeerBuffer.new()
	frame.big_endian = false
	frame.put_u32(payload.size())
	frame.put_data(payload)
	tcp.put_data(frame.data_array)

# Before a blocking read: for up to spin_usec, look for the trainer's next bytes, yielding the CPU between
# looks. A thread that blocks lets its CPU halt, and waking it when the frame comes costs more on a virtual
# machine than a light game's step (docs/bridge.md, `welcome`).
func _await_frame() -> void:
	if spin_usec <= 0:
		return
	var until = OS.get_ticks_usec() + spin_usec
	while tcp.get_available_bytes() == 0 and OS.get_ticks_usec() < until:
		OS.delay_usec(0)

# The next message as {header: Dictionary, blobs: {name: Array, or PoolByteArray for uint8}}, or null when the
# connection ended.
func _receive():
	if tcp.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		_close()
		return null
	_await_frame()
	var got = tcp.get_data(4)
	if got[0] != OK or got[1].size() != 4:
		_close()
		return null
	var frame = StreamPeerBuffer.new()
	frame.big_endian = false
	frame.data_array = got[1]
	var length = frame.get_u32()
	if length > max_frame_bytes:
		_refuse("frame_too_large", "a frame of %d bytes is above the game's limit of %d" % [length, max_frame_bytes], "length")
		return null
	got = tcp.get_data(length)
	if got[0] != OK:
		_close()
		return null
	return _decode(got[1])

# One message's payload as {header, blobs}, or null after refusing it (bad_frame, naming the field or blob).
func _decode(bytes: PoolByteArray):
	var payload = StreamPeerBuffer.new()
	payload.big_endian = false
	payload.data_array = bytes
	var header_len = payload.get_u32() if bytes.size() >= 4 else -1
	if header_len < 0 or header_len > bytes.size() - 4:
		_refuse("bad_frame", "a payload of %d bytes has no header of the length it announces" % bytes.size(), "header")
		return null
	var parsed = JSON.parse(payload.get_data(header_len)[1].get_string_from_utf8())
	if parsed.error != OK or typeof(parsed.result) != TYPE_DICTIONARY:
		_refuse("bad_frame", "the header is not a JSON object", "header")
		return null
	var header = parsed.result
	var blobs = {}
	for b in header.get("blobs", []):
		var dtype = b.get("dtype") if typeof(b) == TYPE_DICTIONARY else null
		if not DTYPE_SIZE.has(dtype):
			_refuse("bad_frame", "unknown dtype %s" % str(dtype), "blobs")
			return null
		var name = str(b.get("name"))
		var count = int(b.get("count", -1))
		if count < 0 or count * DTYPE_SIZE[dtype] > payload.get_size() - payload.get_position():
			_refuse("bad_frame", "blob %s: %s values of %s do not fit in the frame's %d bytes left" % [name, str(b.get("count")), dtype, payload.get_size() - payload.get_position()], name)
			return null
		var values = []
		if dtype == "uint8":   # one PoolByteArray, read at once (a batch's parts)
			values = payload.get_data(count)[1] if count > 0 else PoolByteArray()
		else:
			values.resize(count)
			if dtype == "float32":
				for i in count:
					values[i] = payload.get_float()
			else:
				for i in count:
					values[i] = payload.get_32()
		blobs[name] = values
	if payload.get_position() != payload.get_size():
		_refuse("bad_frame", "the blobs do not add up to the frame's length", "blobs")
		return null
	return {"header": header, "blobs": blobs}

# Stop with an error of the game's own: say it (stderr), tell the trainer, close.
func _refuse(code: String, message: String, field: String) -> void:
	error = "%s: %s (field %s)" % [code, message, field]
	printerr("agentkit bridge: " + error)
	if tcp.get_status() == StreamPeerTCP.STATUS_CONNECTED:
		_send({"type": "error", "code": code, "message": message, "field": field}, [])
	_close()

func _fail(message: String) -> int:
	error = message
	printerr("agentkit bridge: " + message)
	_close()
	return FAILED

func _close() -> void:
	closed = true
	connected = false
	tcp.disconnect_from_host()
