"""Headless MuJoCo rendering for the simulated Franka.

``configure_headless_gl`` picks MuJoCo's GL backend before ``mujoco`` is imported (MUJOCO_GL when
set, EGL on NVIDIA machines, else OSMesa), ``check_rendering`` proves it works or says which
package to install, and ``CameraRenderer`` draws named cameras of a running simulation.

On a CPU, OSMesa's vertex processing dominates: robosuite's Panda meshes have ~170k triangles and
the background textures are up to 1450x1450. With ``fast=True`` the renderer works on its own copy
of the model with visual meshes merged on a 1 cm grid, textures replaced by their mean colour and
no shadows, reflections or multisampling: 3-5x faster, and at 64-128 px the images look the same
(objects keep their colours).
"""
from __future__ import annotations

import copy
import os

import numpy as np

INSTALL_HINTS = {
    "osmesa": "apt-get install libosmesa6 (software rendering, any machine; MUJOCO_GL=osmesa)",
    "egl": "apt-get install libegl1 (GPU rendering; MUJOCO_GL=egl)",
}
MESH_CELL_M = 0.01  # vertex-merging grid of the fast render model (m)
VISUAL_GEOM_GROUPS = (1, 2)  # robosuite: group 0 holds collision geoms, 1 visual meshes


class RenderingUnavailable(RuntimeError):
    """Headless rendering does not work here; the message names the package to install."""


def configure_headless_gl() -> str:
    """Set MUJOCO_GL (and PyOpenGL's platform) unless the user did; call before importing mujoco."""
    backend = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not backend:
        backend = "egl" if os.path.exists("/dev/nvidiactl") else "osmesa"
        os.environ["MUJOCO_GL"] = backend
    if backend in INSTALL_HINTS:
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def import_mujoco():
    """The mujoco module, imported after the GL backend is chosen (mujoco reads MUJOCO_GL on import)."""
    configure_headless_gl()
    import mujoco

    return mujoco


def _unavailable(backend: str, err: BaseException) -> RenderingUnavailable:
    hints = "; or ".join(INSTALL_HINTS.values())
    return RenderingUnavailable(
        f"headless rendering with MUJOCO_GL={backend} does not work ({type(err).__name__}: {err}). "
        f"Install a GL backend: {INSTALL_HINTS.get(backend, hints)}"
        + ("" if backend in INSTALL_HINTS else f" (options: {hints})"))


def check_rendering() -> str:
    """Render one tiny frame with the configured backend; RenderingUnavailable says what to install."""
    backend = configure_headless_gl()
    try:
        mujoco = import_mujoco()
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='0.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        try:
            renderer.render()
        finally:
            renderer.close()
    except Exception as err:  # any failure of the GL stack (ImportError, EGL/OSMesa errors)
        raise _unavailable(backend, err) from err
    return backend


def simplify_for_rendering(model, mesh_cell_m: float = MESH_CELL_M) -> None:
    """Make a render-only model copy cheap to draw (in place): vertex-clustered visual meshes and
    textures replaced by their mean colour. Collision meshes (and so the physics) are untouched."""
    mujoco = import_mujoco()
    visual = (model.geom_type == mujoco.mjtGeom.mjGEOM_MESH) & np.isin(model.geom_group, VISUAL_GEOM_GROUPS)
    for mesh in np.unique(model.geom_dataid[visual]):
        vert_start, face_start, face_count = (model.mesh_vertadr[mesh], model.mesh_faceadr[mesh],
                                              model.mesh_facenum[mesh])
        verts = model.mesh_vert[vert_start:vert_start + model.mesh_vertnum[mesh]]
        # Every vertex is replaced by the first vertex of its grid cell; collapsed triangles go.
        _, first_in_cell, cell_of_vertex = np.unique(np.floor(verts / mesh_cell_m).astype(np.int64), axis=0,
                                                     return_index=True, return_inverse=True)
        faces = first_in_cell[cell_of_vertex.reshape(-1)][model.mesh_face[face_start:face_start + face_count]]
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        kept = int(keep.sum())
        rows = slice(face_start, face_start + kept)
        model.mesh_face[rows] = faces[keep]
        model.mesh_facenormal[rows] = model.mesh_facenormal[face_start:face_start + face_count][keep]
        if model.mesh_texcoordadr[mesh] >= 0:
            model.mesh_facetexcoord[rows] = model.mesh_facetexcoord[face_start:face_start + face_count][keep]
        model.mesh_facenum[mesh] = kept
    for material in range(model.nmat):
        texture = model.mat_texid[material][mujoco.mjtTextureRole.mjTEXROLE_RGB]
        if texture >= 0:
            start = model.tex_adr[texture]
            size = model.tex_width[texture] * model.tex_height[texture] * model.tex_nchannel[texture]
            texels = model.tex_data[start:start + size].reshape(-1, model.tex_nchannel[texture])
            model.mat_rgba[material, :3] *= texels[:, :3].mean(axis=0) / 255.0
    model.mat_texid[:] = -1
    model.vis.quality.offsamples = 0


class CameraRenderer:
    """Renders cameras of a running MuJoCo simulation as uint8 RGB (height, width, 3), upright.

    Works on its own copy of the model (with its own data, synchronised from the physics before
    each frame), so rendering never changes the simulation.
    """

    def __init__(self, model, data, width: int, height: int, fast: bool = True):
        mujoco = import_mujoco()
        self._mujoco = mujoco
        self._physics_data = data
        self.model = copy.deepcopy(model)
        self.model.vis.global_.offwidth, self.model.vis.global_.offheight = width, height
        if fast:
            simplify_for_rendering(self.model)
        self.data = mujoco.MjData(self.model)
        try:
            self._renderer = mujoco.Renderer(self.model, height, width)
        except Exception as err:
            raise _unavailable(os.environ["MUJOCO_GL"], err) from err
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = [int(g in VISUAL_GEOM_GROUPS) for g in range(len(self._option.geomgroup))]
        self._option.sitegroup[:] = 0  # robosuite's grip/target markers stay invisible
        self._flags = {mujoco.mjtRndFlag.mjRND_SHADOW: 0, mujoco.mjtRndFlag.mjRND_REFLECTION: 0,
                       mujoco.mjtRndFlag.mjRND_SKYBOX: 0} if fast else {}
        self.cameras = [mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(self.model.ncam)]

    def render(self, cameras) -> dict[str, np.ndarray]:
        """One frame per camera name, all of the same simulation instant."""
        mujoco, data = self._mujoco, self.data
        data.qpos[:] = self._physics_data.qpos
        data.mocap_pos[:] = self._physics_data.mocap_pos
        data.mocap_quat[:] = self._physics_data.mocap_quat
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_camlight(self.model, data)
        frames = {}
        for camera in cameras:
            self._renderer.update_scene(data, camera=camera, scene_option=self._option)
            for flag, value in self._flags.items():
                self._renderer.scene.flags[flag] = value
            frames[camera] = self._renderer.render()
        return frames

    def close(self) -> None:
        self._renderer.close()
