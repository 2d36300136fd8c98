using System.Runtime.InteropServices;
using OnnxKfac.Graph;

namespace OnnxKfac.Toolkit.Runtime;

/// <summary>
/// A thin binding of the few MPI C calls data-parallel training needs, over the system's
/// <c>libmpi</c>, found at run time (no link-time dependency: a process that never asks for MPI
/// never loads it). Open MPI (handles are addresses of exported objects, <c>libmpi.so.40</c>)
/// and MPICH (integer handles, <c>libmpi.so.12</c>) are told apart by their exports; Open MPI
/// is the one tested. The library is opened RTLD_GLOBAL, as Open MPI's plug-ins expect.
/// </summary>
internal sealed unsafe partial class MpiLibrary
{
    public const int Success = 0;

    // The functions, looked up once.
    public readonly delegate* unmanaged<int*, int> Initialized;
    public readonly delegate* unmanaged<int*, int> Finalized;
    public readonly delegate* unmanaged<int*, byte***, int> Init;
    public readonly delegate* unmanaged<int> Finalize;
    public readonly delegate* unmanaged<nint, int*, int> CommRank;
    public readonly delegate* unmanaged<nint, int*, int> CommSize;
    public readonly delegate* unmanaged<nint, nint, int> CommSetErrhandler;
    public readonly delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int> Iallreduce;
    public readonly delegate* unmanaged<void*, int, nint, int, nint, nint*, int> Ibcast;
    public readonly delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int> Iallgather;
    public readonly delegate* unmanaged<nint, nint*, int> Ibarrier;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Isend;
    public readonly delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int> Irecv;
    public readonly delegate* unmanaged<nint*, int*, void*, int> Test;
    public readonly delegate* unmanaged<nint*, int> Cancel;
    public readonly delegate* unmanaged<nint, int, int> Abort;
    public readonly delegate* unmanaged<int, byte*, int*, int> ErrorString;

    // The predefined handles.
    public readonly nint CommWorld, Float, Double, LongLong, OpSum, ErrorsReturn, InPlace;

    public string Path { get; }
    public string Flavor { get; }

    private MpiLibrary(nint handle, string path)
    {
        Path = path;
        nint F(string name) => NativeLibrary.TryGetExport(handle, name, out nint f)
            ? f : throw new OnnxKfacException($"the MPI library {path} lacks {name}: it is not a complete MPI-3 implementation");
        Initialized = (delegate* unmanaged<int*, int>)F("MPI_Initialized");
        Finalized = (delegate* unmanaged<int*, int>)F("MPI_Finalized");
        Init = (delegate* unmanaged<int*, byte***, int>)F("MPI_Init");
        Finalize = (delegate* unmanaged<int>)F("MPI_Finalize");
        CommRank = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_rank");
        CommSize = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_size");
        CommSetErrhandler = (delegate* unmanaged<nint, nint, int>)F("MPI_Comm_set_errhandler");
        Iallreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, nint*, int>)F("MPI_Iallreduce");
        Ibcast = (delegate* unmanaged<void*, int, nint, int, nint, nint*, int>)F("MPI_Ibcast");
        Iallgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int>)F("MPI_Iallgather");
        Ibarrier = (delegate* unmanaged<nint, nint*, int>)F("MPI_Ibarrier");
        Isend = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)F("MPI_Isend");
        Irecv = (delegate* unmanaged<void*, int, nint, int, int, nint, nint*, int>)F("MPI_Irecv");
        Test = (delegate* unmanaged<nint*, int*, void*, int>)F("MPI_Test");
        Cancel = (delegate* unmanaged<nint*, int>)F("MPI_Cancel");
        Abort = (delegate* unmanaged<nint, int, int>)F("MPI_Abort");
        ErrorString = (delegate* unmanaged<int, byte*, int*, int>)F("MPI_Error_string");
        if (NativeLibrary.TryGetExport(handle, "ompi_mpi_comm_world", out nint world))
        {
            Flavor = "Open MPI";
            CommWorld = world;
            Float = F("ompi_mpi_float");
            Double = F("ompi_mpi_double");
            LongLong = F("ompi_mpi_long_long_int");
            OpSum = F("ompi_mpi_op_sum");
            ErrorsReturn = F("ompi_mpi_errors_return");
            InPlace = 1;
        }
        else
        {
            // MPICH and its derivatives (Intel MPI, MVAPICH): handles are integers fixed by mpi.h.
            Flavor = "MPICH";
            CommWorld = 0x44000000;
            Float = 0x4c00040a;
            Double = 0x4c00080b;
            LongLong = 0x4c000809;
            OpSum = 0x58000003;
            ErrorsReturn = 0x54000001;
            InPlace = -1;
        }
    }

    /// <summary>The names tried, in order, unless ONNXKFAC_LIBMPI names the library.</summary>
    public static readonly string[] Candidates = ["libmpi.so.40", "libmpi.so.12", "libmpi.so", "libmpich.so.12"];

    /// <summary>Opens the system MPI library; one clear error when there is none.</summary>
    public static MpiLibrary Load()
    {
        string? forced = Environment.GetEnvironmentVariable("ONNXKFAC_LIBMPI");
        string[] names = string.IsNullOrEmpty(forced) ? Candidates : [forced];
        var errors = new List<string>();
        foreach (string name in names)
        {
            nint h = DlOpen(name, out string? error);
            if (h != 0) return new MpiLibrary(h, name);
            errors.Add(error ?? name);
        }
        throw new OnnxKfacException(
            $"no MPI library could be loaded (tried {string.Join(", ", names)}): install Open MPI " +
            "(apt-get install openmpi-bin libopenmpi-dev) or set ONNXKFAC_LIBMPI to the path of libmpi.so");
    }

    /// <summary>MPI's text for an error code.</summary>
    public string Describe(int code)
    {
        byte* text = stackalloc byte[512];
        int length = 0;
        return ErrorString(code, text, &length) == Success ? $"{System.Text.Encoding.ASCII.GetString(text, Math.Clamp(length, 0, 512))} (MPI error {code})" : $"MPI error {code}";
    }

    private const int RtldNow = 2, RtldGlobal = 0x100;

    private static nint DlOpen(string name, out string? error)
    {
        error = null;
        try
        {
            nint h = LibDl.dlopen(name, RtldNow | RtldGlobal);
            if (h == 0) error = Marshal.PtrToStringUTF8(LibDl.dlerror());
            return h;
        }
        catch (EntryPointNotFoundException)
        {
            return NativeLibrary.TryLoad(name, out nint h) ? h : 0;
        }
        catch (DllNotFoundException)
        {
            return NativeLibrary.TryLoad(name, out nint h) ? h : 0;
        }
    }

    private static partial class LibDl
    {
        // glibc ≥ 2.34 has dlopen in libc itself. LibraryImport: marshalling generated at compile time (trimming, NativeAOT).
        [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
        public static partial nint dlopen(string file, int mode);

        [LibraryImport("libc")]
        public static partial nint dlerror();
    }
}
