// agentkit bridge client for C# (.NET Standard 2.0: plain System.Net.Sockets and arrays, no engine
// dependency), protocol version 2 over TCP (docs/bridge.md; ProtocolVersion = 1 speaks version 1, float32
// observations only). Drop this one file into a Unity project or any .NET program.
//
//     var agents = new[] { AgentSpec.Box("ship", obsSize: 7, actionSize: 2, low: -1f, high: 1f) };
//     using (var client = new BridgeClient("my-game", agents, game))   // game: an IBridgeGame
//     {
//         client.Connect(BridgeSettings.FromEnvironment(args));       // --port=N or AGENTKIT_BRIDGE_PORT
//         client.Run();                                                // until the trainer sends `close`
//     }
//
// The game fills preallocated arrays (StepBuffers); agents are in the order given to the client, each
// observation row-major. An observation is float32 values by default; ObsSpec.Box(shape, "uint8") declares a
// camera frame ([H, W, 3] bytes, filled into ObsUint8) and "int32" integers (ObsInt32), ObsSpec.Dict named
// Boxes; every agent factory takes an ObsSpec in place of obsSize. Each dtype travels as raw bytes of its type. Unity: call client.Poll() from Update() (it blocks until the trainer's next
// message) or run client.Run() on a worker thread that hands actions to the main thread.
//
// Several instances in one process (a scene's training areas; env.instances_per_process launches
// settings.Instances of them): new BridgeClient("my-game", agents, games), games an IList<IBridgeGame> with one
// game object per instance; one connection carries them all in `batch` frames, and Poll() answers one batch.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Net.Sockets;
using System.Text;

namespace AgentKit.Bridge
{
    /// <summary>The game's side: reset and step fill <see cref="StepBuffers"/>.</summary>
    public interface IBridgeGame
    {
        /// <summary>Start an episode. seed: seed the game's generator, or null to keep it as it is.
        /// Fill Obs, Alive (and Mask when an agent declared one).</summary>
        void Reset(int? seed, IDictionary<string, object> parameters, StepBuffers result);

        /// <summary>Apply every agent's action and advance one step. actionInt/actionFloat: the agents'
        /// integer and float parts, in agent order (docs/bridge.md, "step"). Fill Obs, Reward, Terminated,
        /// Truncated, Alive (and Mask, Info).</summary>
        void Step(int[] actionInt, float[] actionFloat, StepBuffers result);
    }

    /// <summary>An observation (protocol 2): a Box of any shape whose values are float32, uint8 (pixels) or
    /// int32, or a Dict of named Boxes (sent in the order given).</summary>
    public sealed class ObsSpec
    {
        public readonly string Name;  // a Dict entry's name; null for a Box that is the whole observation
        public readonly string Dtype;
        public readonly int Size;
        public readonly ObsSpec[] Entries;  // a Dict's Boxes; null for a Box
        internal readonly Dictionary<string, object> Json;

        ObsSpec(string name, string dtype, int size, ObsSpec[] entries, Dictionary<string, object> json)
        {
            Name = name; Dtype = dtype; Size = size; Entries = entries; Json = json;
        }

        /// <summary>A Box of the given shape (row-major) and dtype "float32", "uint8" or "int32"; bounds optional.</summary>
        public static ObsSpec Box(int[] shape, string dtype = "float32", float? low = null, float? high = null)
        {
            if (dtype != "float32" && dtype != "uint8" && dtype != "int32")
                throw new ArgumentException("observation dtype " + dtype + ": give float32, uint8 or int32");
            int size = 1;
            var dims = new object[shape.Length];
            for (int i = 0; i < shape.Length; i++) { size *= shape[i]; dims[i] = shape[i]; }
            var json = new Dictionary<string, object> { { "shape", dims }, { "dtype", dtype } };
            if (low.HasValue) json["low"] = low.Value;
            if (high.HasValue) json["high"] = high.Value;
            return new ObsSpec(null, dtype, size, null, json);
        }

        /// <summary>A Dict of the Boxes <paramref name="boxes"/> named <paramref name="names"/>.</summary>
        public static ObsSpec Dict(string[] names, ObsSpec[] boxes)
        {
            var entries = new ObsSpec[names.Length];
            var listed = new List<object>();
            for (int i = 0; i < names.Length; i++)
            {
                if (boxes[i].Entries != null) throw new ArgumentException("a Dict entry must be a Box: " + names[i]);
                var json = new Dictionary<string, object>(boxes[i].Json) { { "name", names[i] } };
                entries[i] = new ObsSpec(names[i], boxes[i].Dtype, boxes[i].Size, null, json);
                listed.Add(json);
            }
            return new ObsSpec(null, null, 0, entries,
                               new Dictionary<string, object> { { "kind", "dict" }, { "entries", listed } });
        }

        /// <summary>The Boxes that travel: the Dict's entries, or this Box.</summary>
        public ObsSpec[] Boxes { get { return Entries ?? new[] { this }; } }

        internal static ObsSpec Vector(int size, float? low, float? high)
        {
            return Box(new[] { size }, "float32", low, high);
        }
    }

    /// <summary>One agent's declaration in <c>hello</c> (the vocabulary of the ONNX metadata).</summary>
    public sealed class AgentSpec
    {
        public readonly string Name;
        public readonly int ObsSize, MaskSize, IntCount, FloatCount;  // ObsSize: the float32 values
        public readonly ObsSpec Observation;
        internal readonly Dictionary<string, object> Json;

        AgentSpec(string name, ObsSpec obs, Dictionary<string, object> action, int maskSize, int ints, int floats)
        {
            Name = name; Observation = obs; MaskSize = maskSize; IntCount = ints; FloatCount = floats;
            foreach (var b in obs.Boxes) if (b.Dtype == "float32") ObsSize += b.Size;
            Json = new Dictionary<string, object> {
                { "name", name }, { "observation", obs.Json }, { "action", action }, { "mask", maskSize > 0 } };
        }

        /// <summary>Discrete(n); mask: the game sends which of the n actions are allowed at every step.</summary>
        public static AgentSpec Discrete(string name, int obsSize, int n, bool mask = false,
                                         float? obsLow = null, float? obsHigh = null)
        {
            return Discrete(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), n, mask);
        }

        public static AgentSpec Discrete(string name, ObsSpec obs, int n, bool mask = false)
        {
            var action = new Dictionary<string, object> { { "kind", "discrete" }, { "n", n } };
            return new AgentSpec(name, obs, action, mask ? n : 0, 1, 0);
        }

        /// <summary>A Box of actionSize floats in [low, high] (env units).</summary>
        public static AgentSpec Box(string name, int obsSize, int actionSize, float low, float high,
                                    float? obsLow = null, float? obsHigh = null)
        {
            return Box(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), actionSize, low, high);
        }

        public static AgentSpec Box(string name, ObsSpec obs, int actionSize, float low, float high)
        {
            var action = new Dictionary<string, object> {
                { "kind", "box" }, { "shape", new object[] { actionSize } }, { "low", low }, { "high", high } };
            return new AgentSpec(name, obs, action, 0, 0, actionSize);
        }

        /// <summary>Hybrid: a type (types[k] with the parameters it owns) and one float per parameter.
        /// paramLow/paramHigh are per parameter, in params order; mask: a type mask at every step.</summary>
        public static AgentSpec Hybrid(string name, int obsSize, string[] typeNames, string[][] typeParams,
                                       string[] paramNames, float[] paramLow, float[] paramHigh, bool mask = false,
                                       float? obsLow = null, float? obsHigh = null)
        {
            return Hybrid(name, ObsSpec.Vector(obsSize, obsLow, obsHigh), typeNames, typeParams, paramNames, paramLow,
                          paramHigh, mask);
        }

        public static AgentSpec Hybrid(string name, ObsSpec obs, string[] typeNames, string[][] typeParams,
                                       string[] paramNames, float[] paramLow, float[] paramHigh, bool mask = false)
        {
            var types = new List<object>();
            for (int k = 0; k < typeNames.Length; k++)
                types.Add(new Dictionary<string, object> { { "name", typeNames[k] }, { "params", typeParams[k] } });
            var ps = new List<object>();
            for (int i = 0; i < paramNames.Length; i++)
                ps.Add(new Dictionary<string, object> {
                    { "name", paramNames[i] }, { "low", paramLow[i] }, { "high", paramHigh[i] } });
            var action = new Dictionary<string, object> { { "kind", "hybrid" }, { "types", types }, { "params", ps } };
            return new AgentSpec(name, obs, action, mask ? typeNames.Length : 0, 1, paramNames.Length);
        }
    }

    /// <summary>The arrays a reset or step fills, sized once from the agents' specs.</summary>
    public sealed class StepBuffers
    {
        /// <summary>The observations by dtype: float32 values in Obs, uint8 in ObsUint8, int32 in ObsInt32
        /// (agents in order, a Dict's entries in declared order; Offset says where each starts).</summary>
        public readonly float[] Obs, Reward;
        public readonly byte[] ObsUint8;
        public readonly int[] ObsInt32;
        public readonly byte[] Alive, Terminated, Truncated, Mask;
        /// <summary>Where each agent's float32 observation values / mask start in Obs / Mask.</summary>
        public readonly int[] ObsOffset, MaskOffset;
        readonly Dictionary<string, int> entryOffset = new Dictionary<string, int>();
        /// <summary>Optional numeric facts per agent (agent-major, InfoKeys.Length columns; NaN = none).</summary>
        public string[] InfoKeys = new string[0];
        public float[] Info = new float[0];

        public StepBuffers(IList<AgentSpec> agents)
        {
            int obs = 0, u8 = 0, i32 = 0, mask = 0;
            ObsOffset = new int[agents.Count]; MaskOffset = new int[agents.Count];
            for (int i = 0; i < agents.Count; i++)
            {
                ObsOffset[i] = obs;
                foreach (var b in agents[i].Observation.Boxes)
                {
                    string key = i + "/" + b.Name;
                    if (b.Dtype == "uint8") { entryOffset[key] = u8; u8 += b.Size; }
                    else if (b.Dtype == "int32") { entryOffset[key] = i32; i32 += b.Size; }
                    else { entryOffset[key] = obs; obs += b.Size; }
                }
                MaskOffset[i] = mask; mask += agents[i].MaskSize;
            }
            Obs = new float[obs]; ObsUint8 = new byte[u8]; ObsInt32 = new int[i32]; Mask = new byte[mask];
            Reward = new float[agents.Count];
            Alive = new byte[agents.Count]; Terminated = new byte[agents.Count]; Truncated = new byte[agents.Count];
        }

        /// <summary>Where agent <paramref name="agent"/>'s observation Box (a Dict's entry <paramref name="entry"/>)
        /// starts in the array of its dtype (Obs, ObsUint8 or ObsInt32).</summary>
        public int Offset(int agent, string entry = null)
        {
            int at;
            if (!entryOffset.TryGetValue(agent + "/" + entry, out at))
                throw new ArgumentException("agent " + agent + " has no observation entry " + (entry ?? "(the Box)"));
            return at;
        }

        /// <summary>Declare info columns (e.g. "success"); Info is then agents x keys, NaN-filled.</summary>
        public void SetInfoKeys(params string[] keys)
        {
            InfoKeys = keys;
            Info = new float[Reward.Length * keys.Length];
            for (int i = 0; i < Info.Length; i++) Info[i] = float.NaN;
        }
    }

    /// <summary>Where the trainer is: from "--port=N" style arguments, else the AGENTKIT_BRIDGE_*
    /// variables `agentkit train` sets for launched games.</summary>
    public sealed class BridgeSettings
    {
        public string Host = "127.0.0.1";
        public int Port;
        public int? Instance;
        /// <summary>How many instances this process serves on its one connection (--instances=N or
        /// AGENTKIT_BRIDGE_INSTANCES, what env.instances_per_process launches; default 1): give the client that
        /// many games.</summary>
        public int Instances = 1;
        /// <summary>Seconds Connect keeps trying while nothing listens at Host:Port (--connect-timeout=SECONDS or
        /// AGENTKIT_BRIDGE_CONNECT_TIMEOUT; default 30): a game started before `agentkit train` (listen mode)
        /// connects once the trainer listens.</summary>
        public double ConnectTimeout = 30;
        public string Token;
        public readonly Dictionary<string, string> Extra = new Dictionary<string, string>();

        public static BridgeSettings FromEnvironment(string[] args)
        {
            var values = new Dictionary<string, string>();
            foreach (var key in new[] { "HOST", "PORT", "INSTANCE", "INSTANCES", "TOKEN", "SEED", "CONNECT_TIMEOUT" })
            {
                var v = Environment.GetEnvironmentVariable("AGENTKIT_BRIDGE_" + key);
                if (!string.IsNullOrEmpty(v)) values[key.ToLowerInvariant().Replace('_', '-')] = v;
            }
            foreach (var arg in args)
            {
                if (!arg.StartsWith("--") || arg.IndexOf('=') < 0) continue;
                int eq = arg.IndexOf('=');
                values[arg.Substring(2, eq - 2)] = arg.Substring(eq + 1);
            }
            var s = new BridgeSettings();
            foreach (var kv in values)
            {
                switch (kv.Key)
                {
                    case "host": s.Host = kv.Value; break;
                    case "port": s.Port = WholeNumber(kv.Key, kv.Value, 0, 65535); break;
                    case "instance": s.Instance = WholeNumber(kv.Key, kv.Value, 0, int.MaxValue); break;
                    case "instances": s.Instances = WholeNumber(kv.Key, kv.Value, 1, BridgeClient.MaxInstances); break;
                    case "connect-timeout": s.ConnectTimeout = Seconds(kv.Key, kv.Value); break;
                    case "token": s.Token = kv.Value; break;
                    default: s.Extra[kv.Key] = kv.Value; break;
                }
            }
            return s;
        }

        /// <summary>The option <paramref name="key"/>'s value as a whole number in min .. max, else a
        /// BridgeException ("bad_settings") naming the option and its variable.</summary>
        static int WholeNumber(string key, string value, int min, int max)
        {
            int n;
            if (IsWholeNumber(value, min, max, out n))
                return n;
            throw BadSetting(key, value, "a whole number from " + min + " to " + max);
        }

        /// <summary>The game's own option --<paramref name="key"/>=N (an <see cref="Extra"/> entry, e.g. Thruster's
        /// --agents) as a whole number in min .. max, <paramref name="fallback"/> when it is absent, else a
        /// BridgeException ("bad_settings") naming it.</summary>
        public int ExtraWholeNumber(string key, int fallback, int min, int max)
        {
            string value;
            if (!Extra.TryGetValue(key, out value))
                return fallback;
            int n;
            if (IsWholeNumber(value, min, max, out n))
                return n;
            throw new BridgeException("bad_settings", "--" + key + " is '" + value + "': give a whole number from " +
                                      min + " to " + max);
        }

        static bool IsWholeNumber(string value, int min, int max, out int n)
        {
            return int.TryParse(value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out n) && n >= min &&
                   n <= max;
        }

        /// <summary>The option <paramref name="key"/>'s value as a number of seconds above 0, else a
        /// BridgeException ("bad_settings") naming the option and its variable.</summary>
        static double Seconds(string key, string value)
        {
            double seconds;
            if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out seconds) && seconds > 0
                && !double.IsInfinity(seconds))
                return seconds;
            throw BadSetting(key, value, "a number of seconds above 0");
        }

        static BridgeException BadSetting(string key, string value, string wanted)
        {
            return new BridgeException("bad_settings", "--" + key + " (or AGENTKIT_BRIDGE_" +
                                       key.ToUpperInvariant().Replace('-', '_') + ") is '" + value + "': give " + wanted);
        }
    }

    /// <summary>A refusal or protocol failure; Code is a docs/bridge.md error code.</summary>
    public sealed class BridgeException : Exception
    {
        public readonly string Code;
        public BridgeException(string code, string message) : base(message) { Code = code; }
    }

    /// <summary>The client: connects, says hello, then answers reset/step until close. With several games it
    /// serves them as that many instances on one connection, every message a `batch` (docs/bridge.md, "Several
    /// instances on one connection").</summary>
    public sealed class BridgeClient : IDisposable
    {
        public const int Protocol = 2;
        /// <summary>The most instances one connection may serve (the protocol's limit).</summary>
        public const int MaxInstances = 1024;
        /// <summary>The version this client says it speaks: 2, or 1 for float32 Boxes only.</summary>
        public int ProtocolVersion = Protocol;
        readonly string game;
        readonly AgentSpec[] agents;
        readonly Slot[] slots;   // one per instance this connection serves, in instance order
        int open;                // slots the trainer has not closed yet
        TcpClient tcp;
        Stream stream;
        BinaryReader reader;
        int maxFrameBytes = 16 * 1024 * 1024;
        long spinTicks;  // the welcome's spin_us, in Stopwatch ticks: how long a read waits awake for its frame
        byte[] payload = new byte[1024];
        readonly MemoryStream output = new MemoryStream();  // the frame being sent
        readonly MemoryStream parts = new MemoryStream();   // the answers a batch carries
        readonly List<int> answeredSlots = new List<int>(), answeredSizes = new List<int>();

        /// <summary>The (first) instance's number, from the trainer's welcome.</summary>
        public int Instance { get; private set; }
        /// <summary>How many instances this connection serves: the number of games given.</summary>
        public int Instances { get { return slots.Length; } }
        /// <summary>Steps and resets answered, every instance's together.</summary>
        public long Steps { get; private set; }
        public long Episodes { get; private set; }
        public bool Closed { get; private set; }
        public string CloseReason { get; private set; }

        public BridgeClient(string gameName, IList<AgentSpec> agentSpecs, IBridgeGame game)
            : this(gameName, agentSpecs, new[] { game }) { }

        /// <summary>Serve <paramref name="games"/> (each its own game object, with the same agents) as instances
        /// Instance .. Instance + games.Count - 1 on one connection: a Unity scene's training areas, or what
        /// env.instances_per_process launches (BridgeSettings.Instances games). One game is the constructor above:
        /// plain messages, no batches.</summary>
        public BridgeClient(string gameName, IList<AgentSpec> agentSpecs, IList<IBridgeGame> games)
        {
            if (games == null || games.Count < 1 || games.Count > MaxInstances)
                throw new ArgumentException("give 1 to " + MaxInstances + " games, one per instance; got " +
                                            (games == null ? "none" : games.Count.ToString(CultureInfo.InvariantCulture)));
            this.game = gameName;
            agents = new AgentSpec[agentSpecs.Count];
            agentSpecs.CopyTo(agents, 0);
            slots = new Slot[games.Count];
            for (int k = 0; k < slots.Length; k++) slots[k] = new Slot(games[k], agents);
            open = slots.Length;
        }

        public void Connect(BridgeSettings settings)
        {
            if (settings.Port <= 0)
                throw new BridgeException("bad_settings", "no trainer port: pass --port=N or set AGENTKIT_BRIDGE_PORT");
            tcp = ConnectWithin(settings);
            stream = tcp.GetStream();
            reader = new BinaryReader(stream);
            var specs = new List<object>();
            foreach (var a in agents)
            {
                if (ProtocolVersion < 2 && (a.Observation.Entries != null || a.Observation.Dtype != "float32"))
                    throw new BridgeException("bad_settings", "agent " + a.Name + ": protocol 1 carries one float32 Box per agent");
                specs.Add(a.Json);
            }
            var hello = new Dictionary<string, object> {
                { "type", "hello" }, { "protocol", ProtocolVersion }, { "game", game },
                { "instance", settings.Instance.HasValue ? (object)settings.Instance.Value : null },
                { "token", settings.Token }, { "agents", specs }, { "state_dim", 0 } };
            if (slots.Length > 1) hello["instances"] = slots.Length;
            Send(hello);
            var welcome = Receive();
            var type = welcome.Header.ContainsKey("type") ? welcome.Header["type"] as string : null;
            if (type != "welcome")
                throw new BridgeException(welcome.Get("code", "unexpected_message"),
                    "the trainer refused the game: " + welcome.Get("message", Json.Write(welcome.Header)));
            Instance = Convert.ToInt32(welcome.Header["instance"], CultureInfo.InvariantCulture);
            if (welcome.Header.ContainsKey("max_frame_bytes"))
                maxFrameBytes = Convert.ToInt32(welcome.Header["max_frame_bytes"], CultureInfo.InvariantCulture);
            if (welcome.Header.ContainsKey("spin_us"))
                spinTicks = Convert.ToInt64(welcome.Header["spin_us"], CultureInfo.InvariantCulture)
                    * System.Diagnostics.Stopwatch.Frequency / 1000000;
        }

        /// <summary>A connection to the trainer: a refused one (nothing listens yet: the game started before
        /// `agentkit train`, listen mode) is tried again every 200 ms until settings.ConnectTimeout seconds have
        /// passed, then a BridgeException ("no_connection"); any other socket failure is thrown at once.</summary>
        static TcpClient ConnectWithin(BridgeSettings settings)
        {
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                try { return new TcpClient(settings.Host, settings.Port) { NoDelay = true }; }
                catch (SocketException e)
                {
                    if (e.SocketErrorCode != SocketError.ConnectionRefused) throw;
                    double left = settings.ConnectTimeout - waited.Elapsed.TotalSeconds;
                    if (left <= 0)
                        throw new BridgeException("no_connection", "cannot connect to " + settings.Host + ":" + settings.Port +
                            ": nothing listened there for " + settings.ConnectTimeout.ToString("0.###", CultureInfo.InvariantCulture) +
                            " s (connection refused): start `agentkit train` with env.mode: listen first, or raise --connect-timeout");
                    System.Threading.Thread.Sleep((int)Math.Ceiling(Math.Min(0.2, left) * 1000));
                }
            }
        }

        /// <summary>Answer messages until the trainer closes the connection.</summary>
        public void Run()
        {
            while (Poll()) { }
        }

        /// <summary>Wait for and answer one message (with several instances: one batch, usually a step of every
        /// instance); false once the connection is closed.</summary>
        public bool Poll()
        {
            if (Closed) return false;
            Message msg;
            try { msg = Receive(); }
            catch (EndOfStreamException) { Closed = true; CloseReason = "connection closed"; return false; }
            catch (IOException) { Closed = true; CloseReason = "connection closed"; return false; }
            string type = msg.Get("type", "");
            if (type == "error")
            {
                Dispose();
                throw new BridgeException(msg.Get("code", "error"), "the trainer reported: " + msg.Get("message", ""));
            }
            if (slots.Length > 1) return AnswerBatch(msg);
            if (type == "close")
            {
                CloseReason = msg.Get("reason", "");
                Dispose();
                return false;
            }
            if (!Answer(slots[0], msg)) return Unexpected("a " + type + " message");
            SendFrame(slots[0].Answer);
            return true;
        }

        public void Dispose()
        {
            Closed = true;
            if (tcp != null) tcp.Close();
            tcp = null;
        }

        /// <summary>Tell the trainer that <paramref name="what"/> came unexpectedly and close; false (for Poll).</summary>
        bool Unexpected(string what)
        {
            SendError("unexpected_message", "the game did not expect " + what);
            Dispose();
            return false;
        }

        // -- instances ----------------------------------------------------------------------------------------

        /// <summary>One instance: its game, its buffers and its last answer (a frame whose first 4 bytes, the
        /// length, SendFrame fills in).</summary>
        sealed class Slot
        {
            public readonly IBridgeGame Game;
            public readonly StepBuffers Buffers;
            public readonly int[] ActionInt;
            public readonly float[] ActionFloat;
            public readonly MemoryStream Answer = new MemoryStream();
            public bool Closed;

            public Slot(IBridgeGame game, AgentSpec[] agents)
            {
                Game = game;
                Buffers = new StepBuffers(agents);
                int ints = 0, floats = 0;
                foreach (var a in agents) { ints += a.IntCount; floats += a.FloatCount; }
                ActionInt = new int[ints];
                ActionFloat = new float[floats];
            }

            public void Clear()
            {
                Array.Clear(Buffers.Reward, 0, Buffers.Reward.Length);
                Array.Clear(Buffers.Terminated, 0, Buffers.Terminated.Length);
                Array.Clear(Buffers.Truncated, 0, Buffers.Truncated.Length);
            }
        }

        /// <summary>Run a reset or step on <paramref name="slot"/>'s game and put the result into its Answer;
        /// false for any other message (nothing is done).</summary>
        bool Answer(Slot slot, Message msg)
        {
            switch (msg.Get("type", ""))
            {
                case "reset":
                    object seed;
                    msg.Header.TryGetValue("seed", out seed);
                    object p;
                    msg.Header.TryGetValue("params", out p);
                    slot.Clear();
                    slot.Game.Reset(seed == null ? (int?)null : Convert.ToInt32(seed, CultureInfo.InvariantCulture),
                                    p as IDictionary<string, object> ?? new Dictionary<string, object>(), slot.Buffers);
                    Episodes++;
                    EncodeResult(slot, "reset_result", false);
                    return true;
                case "step":
                    msg.Read("action_int", slot.ActionInt);
                    msg.Read("action_float", slot.ActionFloat);
                    slot.Clear();
                    slot.Game.Step(slot.ActionInt, slot.ActionFloat, slot.Buffers);
                    Steps++;
                    EncodeResult(slot, "step_result", true);
                    return true;
                default:
                    return false;
            }
        }

        /// <summary>Answer a batch with one batch: an answer for each reset and step in it, for the same slots; a
        /// close takes its slot out, and the last one closes the connection (false).</summary>
        bool AnswerBatch(Message batch)
        {
            string type = batch.Get("type", "");
            if (type != "batch") return Unexpected("a " + type + " message on a connection of " + slots.Length + " instances (they come in batches)");
            List<object> slotList, sizeList;
            int at = BatchParts(batch, out slotList, out sizeList);
            parts.SetLength(0);
            answeredSlots.Clear();
            answeredSizes.Clear();
            for (int i = 0; i < slotList.Count; i++)
            {
                int k = Convert.ToInt32(slotList[i], CultureInfo.InvariantCulture);
                int size = Convert.ToInt32(sizeList[i], CultureInfo.InvariantCulture);
                var msg = Parse(batch.Payload, at, size);
                at += size;
                var slot = slots[k];
                if (msg.Get("type", "") == "close")
                {
                    if (!slot.Closed) { slot.Closed = true; open--; }
                    CloseReason = msg.Get("reason", "");
                    continue;
                }
                if (!Answer(slot, msg)) return Unexpected("a " + msg.Get("type", "") + " message for instance " + (Instance + k) + " in a batch");
                int length = (int)slot.Answer.Length - 4;
                parts.Write(slot.Answer.GetBuffer(), 4, length);  // copied now: a slot that comes again reuses its Answer
                answeredSlots.Add(k);
                answeredSizes.Add(length);
            }
            if (answeredSlots.Count > 0)
            {
                Begin(output);
                AppendHeader(output, new Dictionary<string, object> {
                    { "type", "batch" }, { "slots", answeredSlots }, { "sizes", answeredSizes },
                    { "blobs", new List<object> { new Dictionary<string, object> {
                        { "name", "parts" }, { "dtype", "uint8" }, { "count", (int)parts.Length } } } } });
                output.Write(parts.GetBuffer(), 0, (int)parts.Length);
                SendFrame(output);
            }
            if (open > 0) return true;
            Dispose();
            return false;
        }

        /// <summary>Where a batch's messages start in its payload, its slots and sizes checked (each slot 0 ..
        /// K-1, sizes whole numbers adding up to the one blob, parts); a malformed batch is refused with
        /// bad_frame naming the field, to the trainer and in the BridgeException.</summary>
        int BatchParts(Message batch, out List<object> slotList, out List<object> sizeList)
        {
            object v;
            slotList = batch.Header.TryGetValue("slots", out v) ? v as List<object> : null;
            sizeList = batch.Header.TryGetValue("sizes", out v) ? v as List<object> : null;
            bool fine = slotList != null && sizeList != null && slotList.Count == sizeList.Count;
            long total = 0;
            for (int i = 0; fine && i < slotList.Count; i++)
            {
                fine = IsWhole(slotList[i], 0, slots.Length - 1) && IsWhole(sizeList[i], 0, int.MaxValue);
                if (fine) total += Convert.ToInt64(sizeList[i], CultureInfo.InvariantCulture);
            }
            if (!fine)
                RefuseBatch("slots", "a batch for " + slots.Length + " instances needs 'slots' (each 0 .. " + (slots.Length - 1) +
                            ") and 'sizes' (bytes), lists of the same length; got slots " + Json.Write(slotList) +
                            ", sizes " + Json.Write(sizeList));
            int[] blob;
            bool onlyParts = batch.Blobs.Count == 0 || (batch.Blobs.Count == 1 && batch.Blobs.TryGetValue("parts", out blob));
            int bytes = batch.Blobs.TryGetValue("parts", out blob) ? blob[1] : 0;
            if (!onlyParts || total != bytes)
                RefuseBatch("parts", "a batch's one blob is 'parts' with sum(sizes) = " + total + " bytes; got blobs " +
                            Json.Write(batch.Blobs.Keys) + " of " + bytes + " bytes");
            return blob != null ? blob[0] : 0;
        }

        static bool IsWhole(object v, long min, long max)
        {
            if (!(v is double)) return false;
            double d = (double)v;
            return d == Math.Floor(d) && d >= min && d <= max;
        }

        void RefuseBatch(string field, string message)
        {
            SendError("bad_frame", message, field);
            Dispose();
            throw new BridgeException("bad_frame", "the trainer sent a malformed batch (field " + field + "): " + message);
        }

        // -- framing ------------------------------------------------------------------------------------------

        sealed class Message
        {
            public Dictionary<string, object> Header;
            public byte[] Payload;
            public Dictionary<string, int[]> Blobs = new Dictionary<string, int[]>();  // name -> {offset, count}

            public string Get(string key, string fallback)
            {
                object v;
                return Header.TryGetValue(key, out v) && v != null ? Convert.ToString(v, CultureInfo.InvariantCulture) : fallback;
            }

            public void Read(string name, Array into)
            {
                int[] at;
                if (!Blobs.TryGetValue(name, out at))
                    throw new BridgeException("bad_frame", "the step has no " + name + " blob");
                int size = into is int[] || into is float[] ? 4 : 1;
                if (at[1] != into.Length)
                    throw new BridgeException("bad_frame", name + " has " + at[1] + " values, the agents take " + into.Length);
                Buffer.BlockCopy(Payload, at[0], into, 0, at[1] * size);   // little-endian hosts (all of .NET's)
            }
        }

        /// <summary>Before a blocking read: for up to the welcome's spin_us, poll for the trainer's next bytes,
        /// yielding the CPU between polls. A thread that blocks lets its CPU halt, and waking it when the frame
        /// comes costs more on a virtual machine than a light game's step (docs/bridge.md, `welcome`).</summary>
        void AwaitFrame()
        {
            if (spinTicks <= 0) return;
            long until = System.Diagnostics.Stopwatch.GetTimestamp() + spinTicks;
            while (tcp.Client.Available == 0 && System.Diagnostics.Stopwatch.GetTimestamp() < until)
                System.Threading.Thread.Yield();
        }

        /// <summary>The next frame from the trainer (its payload in the reused buffer `payload`).</summary>
        Message Receive()
        {
            AwaitFrame();
            int length = reader.ReadInt32();
            if (length < 4) throw new BridgeException("bad_frame", "the trainer sent a frame of " + length + " bytes");
            if (length > maxFrameBytes)
            {
                SendError("frame_too_large", "a frame of " + length + " bytes is above the game's limit of " + maxFrameBytes);
                throw new BridgeException("frame_too_large", "the trainer sent a frame of " + length + " bytes");
            }
            if (payload.Length < length) payload = new byte[length];
            int got = 0;
            while (got < length)
            {
                int n = stream.Read(payload, got, length - got);
                if (n <= 0) throw new EndOfStreamException();
                got += n;
            }
            return Parse(payload, 0, length);
        }

        /// <summary>The message whose payload is bytes start .. start + length of <paramref name="buffer"/> (a
        /// frame's, or one part of a batch); its blobs' offsets are into <paramref name="buffer"/>.</summary>
        static Message Parse(byte[] buffer, int start, int length)
        {
            int headerLength = length >= 4 ? BitConverter.ToInt32(buffer, start) : -1;
            if (headerLength < 0 || headerLength > length - 4)
                throw new BridgeException("bad_frame", "a message of " + length + " bytes cannot hold its header");
            var header = Json.Parse(Encoding.UTF8.GetString(buffer, start + 4, headerLength)) as Dictionary<string, object>;
            if (header == null) throw new BridgeException("bad_frame", "the header is not a JSON object");
            var msg = new Message { Header = header, Payload = buffer };
            int offset = start + 4 + headerLength;
            object listed;
            if (header.TryGetValue("blobs", out listed) && listed is List<object>)
            {
                foreach (Dictionary<string, object> b in (List<object>)listed)
                {
                    int count = Convert.ToInt32(b["count"], CultureInfo.InvariantCulture);
                    string dtype = (string)b["dtype"];
                    int size = dtype == "uint8" ? 1 : 4;
                    msg.Blobs[(string)b["name"]] = new[] { offset, count };
                    offset += count * size;
                }
            }
            if (offset != start + length) throw new BridgeException("bad_frame", "the blobs do not add up to the frame's length");
            return msg;
        }

        /// <summary>The answer to a reset (step false) or step of <paramref name="slot"/>, from its buffers, into
        /// its Answer.</summary>
        void EncodeResult(Slot slot, string type, bool step)
        {
            var buffers = slot.Buffers;
            var blobs = new List<KeyValuePair<string, Array>>();
            if (buffers.Obs.Length > 0 || ProtocolVersion < 2) blobs.Add(new KeyValuePair<string, Array>("obs", buffers.Obs));
            if (buffers.ObsUint8.Length > 0) blobs.Add(new KeyValuePair<string, Array>("obs_uint8", buffers.ObsUint8));
            if (buffers.ObsInt32.Length > 0) blobs.Add(new KeyValuePair<string, Array>("obs_int32", buffers.ObsInt32));
            if (step)
            {
                blobs.Add(new KeyValuePair<string, Array>("reward", buffers.Reward));
                blobs.Add(new KeyValuePair<string, Array>("terminated", buffers.Terminated));
                blobs.Add(new KeyValuePair<string, Array>("truncated", buffers.Truncated));
            }
            blobs.Add(new KeyValuePair<string, Array>("alive", buffers.Alive));
            if (buffers.Mask.Length > 0) blobs.Add(new KeyValuePair<string, Array>("mask", buffers.Mask));
            var header = new Dictionary<string, object> { { "type", type } };
            if (step && buffers.InfoKeys.Length > 0)
            {
                header["info_keys"] = buffers.InfoKeys;
                blobs.Add(new KeyValuePair<string, Array>("info", buffers.Info));
            }
            Begin(slot.Answer);
            AppendPayload(slot.Answer, header, blobs);
        }

        void SendError(string code, string message, string field = null)
        {
            var error = new Dictionary<string, object> { { "type", "error" }, { "code", code }, { "message", message } };
            if (field != null) error["field"] = field;
            try { Send(error); }
            catch (Exception) { }
        }

        void Send(Dictionary<string, object> header, IList<KeyValuePair<string, Array>> blobs = null)
        {
            Begin(output);
            AppendPayload(output, header, blobs);
            SendFrame(output);
        }

        /// <summary>Empty <paramref name="frame"/> but for the room of its length (SendFrame writes it).</summary>
        static void Begin(MemoryStream frame)
        {
            frame.SetLength(4);
            frame.Position = 4;
        }

        /// <summary>Write the frame Begin started: its length, then the payload after it, in one write.</summary>
        void SendFrame(MemoryStream frame)
        {
            frame.Position = 0;
            WriteInt32(frame, (int)frame.Length - 4);
            stream.Write(frame.GetBuffer(), 0, (int)frame.Length);
        }

        /// <summary>Append one payload: the header (with `blobs` listing <paramref name="blobs"/>) and the blobs'
        /// raw little-endian bytes.</summary>
        static void AppendPayload(MemoryStream into, Dictionary<string, object> header, IList<KeyValuePair<string, Array>> blobs)
        {
            var listed = new List<object>();
            if (blobs != null)
                foreach (var b in blobs)
                {
                    string dtype = b.Value is float[] ? "float32" : b.Value is int[] ? "int32" : "uint8";
                    listed.Add(new Dictionary<string, object> { { "name", b.Key }, { "dtype", dtype }, { "count", b.Value.Length } });
                }
            header["blobs"] = listed;
            AppendHeader(into, header);
            if (blobs != null)
                foreach (var b in blobs)
                {
                    int n = Buffer.ByteLength(b.Value), at = (int)into.Length;
                    into.SetLength(at + n);
                    Buffer.BlockCopy(b.Value, 0, into.GetBuffer(), at, n);
                    into.Position = at + n;
                }
        }

        /// <summary>Append a header's length (4 bytes, little-endian) and its JSON text.</summary>
        static void AppendHeader(MemoryStream into, Dictionary<string, object> header)
        {
            byte[] text = Encoding.UTF8.GetBytes(Json.Write(header));
            WriteInt32(into, text.Length);
            into.Write(text, 0, text.Length);
        }

        static void WriteInt32(MemoryStream into, int n)
        {
            into.WriteByte((byte)n); into.WriteByte((byte)(n >> 8)); into.WriteByte((byte)(n >> 16)); into.WriteByte((byte)(n >> 24));
        }
    }

    /// <summary>The little JSON the headers need (.NET Standard 2.0 has no JSON library; Unity's
    /// JsonUtility cannot read free-form objects). Numbers parse as double.</summary>
    public static class Json
    {
        public static string Write(object value)
        {
            var sb = new StringBuilder();
            WriteValue(sb, value);
            return sb.ToString();
        }

        static void WriteValue(StringBuilder sb, object v)
        {
            if (v == null) sb.Append("null");
            else if (v is string) WriteString(sb, (string)v);
            else if (v is bool) sb.Append((bool)v ? "true" : "false");
            else if (v is float) sb.Append(((float)v).ToString("R", CultureInfo.InvariantCulture));
            else if (v is double) sb.Append(((double)v).ToString("R", CultureInfo.InvariantCulture));
            else if (v is int || v is long) sb.Append(Convert.ToString(v, CultureInfo.InvariantCulture));
            else if (v is IDictionary<string, object>)
            {
                sb.Append('{');
                bool first = true;
                foreach (var kv in (IDictionary<string, object>)v)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteString(sb, kv.Key);
                    sb.Append(':');
                    WriteValue(sb, kv.Value);
                }
                sb.Append('}');
            }
            else if (v is System.Collections.IEnumerable)
            {
                sb.Append('[');
                bool first = true;
                foreach (var item in (System.Collections.IEnumerable)v)
                {
                    if (!first) sb.Append(',');
                    first = false;
                    WriteValue(sb, item);
                }
                sb.Append(']');
            }
            else throw new ArgumentException("cannot write " + v.GetType() + " as JSON");
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                if (c == '"' || c == '\\') sb.Append('\\').Append(c);
                else if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4"));
                else sb.Append(c);
            }
            sb.Append('"');
        }

        public static object Parse(string text)
        {
            int i = 0;
            var v = ParseValue(text, ref i);
            Skip(text, ref i);
            if (i != text.Length) throw new BridgeException("bad_frame", "trailing characters in a JSON header");
            return v;
        }

        static void Skip(string s, ref int i)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        }

        static object ParseValue(string s, ref int i)
        {
            Skip(s, ref i);
            if (i >= s.Length) throw new BridgeException("bad_frame", "a JSON header ends early");
            char c = s[i];
            if (c == '{')
            {
                var d = new Dictionary<string, object>();
                i++;
                Skip(s, ref i);
                if (s[i] == '}') { i++; return d; }
                while (true)
                {
                    Skip(s, ref i);
                    string key = ParseString(s, ref i);
                    Skip(s, ref i);
                    i++;  // ':'
                    d[key] = ParseValue(s, ref i);
                    Skip(s, ref i);
                    if (s[i++] == '}') return d;
                }
            }
            if (c == '[')
            {
                var l = new List<object>();
                i++;
                Skip(s, ref i);
                if (s[i] == ']') { i++; return l; }
                while (true)
                {
                    l.Add(ParseValue(s, ref i));
                    Skip(s, ref i);
                    if (s[i++] == ']') return l;
                }
            }
            if (c == '"') return ParseString(s, ref i);
            if (s.Substring(i).StartsWith("true")) { i += 4; return true; }
            if (s.Substring(i).StartsWith("false")) { i += 5; return false; }
            if (s.Substring(i).StartsWith("null")) { i += 4; return null; }
            int start = i;
            while (i < s.Length && "+-0123456789.eE".IndexOf(s[i]) >= 0) i++;
            return double.Parse(s.Substring(start, i - start), CultureInfo.InvariantCulture);
        }

        static string ParseString(string s, ref int i)
        {
            var sb = new StringBuilder();
            i++;  // opening quote
            while (s[i] != '"')
            {
                char c = s[i++];
                if (c != '\\') { sb.Append(c); continue; }
                char e = s[i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u': sb.Append((char)Convert.ToInt32(s.Substring(i, 4), 16)); i += 4; break;
                    default: sb.Append(e); break;
                }
            }
            i++;
            return sb.ToString();
        }
    }
}
