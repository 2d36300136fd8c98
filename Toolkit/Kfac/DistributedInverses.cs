using OnnxKfac.Toolkit.Kfac.Blocks;
using OnnxKfac.Toolkit.Runtime;

namespace OnnxKfac.Toolkit.Kfac;

/// <summary>
/// Data-parallel K-FAC's inverses as KAISA and kfac-jax divide them: each block's damped
/// inverses are computed on one rank (blocks assigned largest first to the least loaded rank,
/// by the d³ cost of their inverses), in one inverse program over that rank's blocks (Cholesky or
/// ONNX Runtime), and
/// broadcast from it: one broadcast per rank, of all its blocks' inverse buffers packed.
/// Every rank ends with the same inverses, and the inversion cost divides across ranks.
/// </summary>
internal sealed class DistributedInverses : IDisposable
{
    private readonly ICollectives _collectives;
    private readonly IKfacProgram? _own;
    private readonly List<float[]>[] _buffers;   // per owner rank: its blocks' inverse buffers, in block order
    private readonly float[][] _packed;

    public DistributedInverses(IReadOnlyList<CurvatureBlock> blocks, ICollectives collectives, Func<IEnumerable<CurvatureBlock>, IKfacProgram?> build)
    {
        _collectives = collectives;
        Owners = Assign(blocks, collectives.Size);
        _buffers = [.. Enumerable.Range(0, collectives.Size).Select(_ => new List<float[]>())];
        for (int i = 0; i < blocks.Count; i++) _buffers[Owners[i]].AddRange(blocks[i].InverseBuffers);
        _packed = [.. _buffers.Select(list => new float[list.Sum(b => b.Length)])];
        _own = build(blocks.Where((_, i) => Owners[i] == collectives.Rank));
    }

    /// <summary>The rank that inverts each block (in block order).</summary>
    public int[] Owners { get; }

    /// <summary>Largest inverse first, each to the rank with the least cost so far (ties: the lower rank).</summary>
    public static int[] Assign(IReadOnlyList<CurvatureBlock> blocks, int ranks)
    {
        var owners = new int[blocks.Count];
        var load = new double[ranks];
        foreach (int i in Enumerable.Range(0, blocks.Count).OrderByDescending(i => blocks[i].InverseCost).ThenBy(i => i))
        {
            if (blocks[i].InverseCost <= 0) continue;   // nothing to invert: rank 0, no buffers
            int r = Array.IndexOf(load, load.Min());
            owners[i] = r;
            load[r] += blocks[i].InverseCost;
        }
        return owners;
    }

    /// <summary>Runs this rank's program, then broadcasts every rank's inverses to all.</summary>
    public void Run()
    {
        _own?.Run();
        for (int r = 0; r < _packed.Length; r++)
        {
            var packed = _packed[r];
            if (packed.Length == 0) continue;
            bool mine = r == _collectives.Rank;
            int o = 0;
            if (mine)
                foreach (var b in _buffers[r]) { b.CopyTo(packed, o); o += b.Length; }
            _collectives.Broadcast(packed, r);
            if (mine) continue;
            o = 0;
            foreach (var b in _buffers[r]) { packed.AsSpan(o, b.Length).CopyTo(b); o += b.Length; }
        }
    }

    public void Dispose() => _own?.Dispose();
}
