// A WebGL2 viewer for the GLB BEM makes (src/bem/geometry/glb.py): meshes of POSITION and
// uint32 indices, one colour per primitive, nodes under one root. Elements sharing a mesh
// are drawn instanced (one draw call per primitive, not per element); flat shading comes
// from screen-space derivatives, since the file carries no normals. Picking renders
// element ids into an offscreen buffer and reads the pixel under the pointer.

const VERTEX = `#version 300 es
layout(location = 0) in vec3 position;
layout(location = 1) in vec4 m0;
layout(location = 2) in vec4 m1;
layout(location = 3) in vec4 m2;
layout(location = 4) in vec4 m3;
layout(location = 5) in vec4 tint;
layout(location = 6) in vec4 pickColour;
uniform mat4 viewProjection;
uniform vec4 base;
uniform bool picking;
out vec3 world;
out vec4 colour;
void main() {
  vec4 placed = mat4(m0, m1, m2, m3) * vec4(position, 1.0);
  world = placed.xyz;
  colour = picking ? pickColour : (tint.a > 0.0 ? tint : base);
  gl_Position = viewProjection * placed;
}`;

const FRAGMENT = `#version 300 es
precision highp float;
in vec3 world;
in vec4 colour;
uniform bool picking;
uniform vec3 light;
out vec4 result;
void main() {
  if (picking) { result = colour; return; }
  vec3 normal = normalize(cross(dFdx(world), dFdy(world)));
  float shade = 0.4 + 0.6 * abs(dot(normal, light));
  result = vec4(colour.rgb * shade, colour.a);
}`;

const INSTANCE_FLOATS = 24; // matrix 16, tint 4, pick colour 4

// Column-major 4x4 matrices, as glTF and WebGL store them.
function multiply(a, b) {
  const out = new Float32Array(16);
  for (let c = 0; c < 4; c++)
    for (let r = 0; r < 4; r++) {
      let sum = 0;
      for (let k = 0; k < 4; k++) sum += a[k * 4 + r] * b[c * 4 + k];
      out[c * 4 + r] = sum;
    }
  return out;
}

function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2);
  const out = new Float32Array(16);
  out[0] = f / aspect;
  out[5] = f;
  out[10] = (far + near) / (near - far);
  out[11] = -1;
  out[14] = (2 * far * near) / (near - far);
  return out;
}

function lookAt(eye, target, up) {
  const z = normalize(sub(eye, target));
  const x = normalize(cross(up, z));
  const y = cross(z, x);
  return new Float32Array([
    x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
    -dot(x, eye), -dot(y, eye), -dot(z, eye), 1,
  ]);
}

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const normalize = (a) => { const n = Math.hypot(...a) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };

function transform(m, p) {
  return [0, 1, 2].map((i) => m[i] * p[0] + m[4 + i] * p[1] + m[8 + i] * p[2] + m[12 + i]);
}

export function parseGlb(buffer) {
  const view = new DataView(buffer);
  if (view.getUint32(0, true) !== 0x46546c67 || view.getUint32(4, true) !== 2) {
    throw new Error("not a glTF 2.0 binary file");
  }
  const jsonLength = view.getUint32(12, true);
  const json = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 20, jsonLength)));
  const binStart = 20 + jsonLength;
  const bin = binStart < buffer.byteLength ? new Uint8Array(buffer, binStart + 8, view.getUint32(binStart, true)) : new Uint8Array(0);
  return { json, bin };
}

export class Viewer {
  constructor(canvas, { onpick } = {}) {
    this.canvas = canvas;
    this.onpick = onpick;
    const gl = canvas.getContext("webgl2", { antialias: true, preserveDrawingBuffer: true });
    if (!gl) throw new Error("This browser has no WebGL2.");
    this.gl = gl;
    this.program = this.#program();
    this.uniforms = Object.fromEntries(
      ["viewProjection", "base", "picking", "light"].map((n) => [n, gl.getUniformLocation(this.program, n)]),
    );
    this.elements = []; // {guid, mesh, matrix}
    this.meshes = []; // {vao, primitives: [{indices, count, colour}], instances, count}
    this.tints = new Map(); // guid -> [r, g, b, a]
    this.hidden = new Set(); // guids
    this.camera = { yaw: -0.8, pitch: 0.5, distance: 30, target: [0, 0, 0] };
    this.#controls();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  #program() {
    const gl = this.gl;
    const shader = (type, source) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, source);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const program = gl.createProgram();
    gl.attachShader(program, shader(gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, shader(gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    return program;
  }

  // Load a GLB: upload each mesh once, place each element node, frame the whole model.
  load(buffer) {
    const gl = this.gl;
    const { json, bin } = parseGlb(buffer);
    const nodes = json.nodes || [];
    const root = nodes[0] || {};
    const rootMatrix = new Float32Array(root.matrix || [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    const bytes = (accessor) => {
      const v = json.bufferViews[accessor.bufferView];
      return bin.subarray(v.byteOffset || 0, (v.byteOffset || 0) + v.byteLength);
    };
    this.meshes = (json.meshes || []).map((mesh) => {
      const vao = gl.createVertexArray();
      gl.bindVertexArray(vao);
      const positionAccessor = json.accessors[mesh.primitives[0].attributes.POSITION];
      gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
      gl.bufferData(gl.ARRAY_BUFFER, bytes(positionAccessor), gl.STATIC_DRAW);
      gl.enableVertexAttribArray(0);
      gl.vertexAttribPointer(0, 3, gl.FLOAT, false, 0, 0);
      const instances = gl.createBuffer();
      gl.bindBuffer(gl.ARRAY_BUFFER, instances);
      const stride = INSTANCE_FLOATS * 4;
      for (let i = 0; i < 6; i++) {
        gl.enableVertexAttribArray(1 + i);
        gl.vertexAttribPointer(1 + i, 4, gl.FLOAT, false, stride, i * 16);
        gl.vertexAttribDivisor(1 + i, 1);
      }
      const primitives = mesh.primitives.map((p) => {
        const accessor = json.accessors[p.indices];
        const indices = gl.createBuffer();
        gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indices);
        gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, bytes(accessor), gl.STATIC_DRAW);
        const material = json.materials?.[p.material];
        const colour = material?.pbrMetallicRoughness?.baseColorFactor || [0.8, 0.8, 0.8, 1];
        return { indices, count: accessor.count, colour };
      });
      gl.bindVertexArray(null);
      return { vao, instances, primitives, count: 0, bounds: [positionAccessor.min, positionAccessor.max] };
    });
    this.elements = (root.children || []).map((index) => {
      const node = nodes[index];
      const own = new Float32Array(node.matrix || [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
      return { guid: node.name, mesh: node.mesh, matrix: multiply(rootMatrix, own) };
    });
    this.#frame();
    this.#upload();
    this.draw();
    return this.elements.length;
  }

  #frame() {
    let lo = [Infinity, Infinity, Infinity];
    let hi = [-Infinity, -Infinity, -Infinity];
    for (const e of this.elements) {
      const [min, max] = this.meshes[e.mesh].bounds;
      for (const corner of [0, 1, 2, 3, 4, 5, 6, 7]) {
        const p = transform(e.matrix, [corner & 1 ? max[0] : min[0], corner & 2 ? max[1] : min[1], corner & 4 ? max[2] : min[2]]);
        lo = lo.map((v, i) => Math.min(v, p[i]));
        hi = hi.map((v, i) => Math.max(v, p[i]));
      }
    }
    if (!this.elements.length) return;
    this.camera.target = lo.map((v, i) => (v + hi[i]) / 2);
    this.radius = Math.max(Math.hypot(...sub(hi, lo)) / 2, 1);
    this.camera.distance = this.radius * 2.4;
  }

  // Instance data per mesh: visible elements only, with their tint and pick id.
  #upload() {
    const gl = this.gl;
    const byMesh = this.meshes.map(() => []);
    this.elements.forEach((e, index) => { if (!this.hidden.has(e.guid)) byMesh[e.mesh].push(index); });
    this.meshes.forEach((mesh, m) => {
      const data = new Float32Array(byMesh[m].length * INSTANCE_FLOATS);
      byMesh[m].forEach((index, i) => {
        const e = this.elements[index];
        data.set(e.matrix, i * INSTANCE_FLOATS);
        data.set(this.tints.get(e.guid) || [0, 0, 0, 0], i * INSTANCE_FLOATS + 16);
        const id = index + 1;
        data.set([(id & 255) / 255, ((id >> 8) & 255) / 255, ((id >> 16) & 255) / 255, 1], i * INSTANCE_FLOATS + 20);
      });
      gl.bindBuffer(gl.ARRAY_BUFFER, mesh.instances);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
      mesh.count = byMesh[m].length;
    });
  }

  // Colour these elements (guid -> [r, g, b, a]); all others keep their own colours.
  colour(tints) {
    this.tints = new Map(tints);
    this.#upload();
    this.draw();
  }

  hide(guids) {
    this.hidden = new Set(guids);
    this.#upload();
    this.draw();
  }

  #viewProjection() {
    const { yaw, pitch, distance, target } = this.camera;
    const eye = [
      target[0] + distance * Math.cos(pitch) * Math.sin(yaw),
      target[1] + distance * Math.sin(pitch),
      target[2] + distance * Math.cos(pitch) * Math.cos(yaw),
    ];
    const aspect = this.canvas.width / Math.max(this.canvas.height, 1);
    const near = Math.max(distance / 1000, 0.01);
    return multiply(perspective(Math.PI / 4, aspect, near, distance + (this.radius || 100) * 4), lookAt(eye, target, [0, 1, 0]));
  }

  #render(picking) {
    const gl = this.gl;
    gl.useProgram(this.program);
    gl.uniformMatrix4fv(this.uniforms.viewProjection, false, this.#viewProjection());
    gl.uniform1i(this.uniforms.picking, picking ? 1 : 0);
    gl.uniform3fv(this.uniforms.light, normalize([0.4, 0.9, 0.6]));
    gl.enable(gl.DEPTH_TEST);
    gl.clearColor(picking ? 0 : 0.93, picking ? 0 : 0.95, picking ? 0 : 0.97, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    // Opaque first, then see-through surfaces (glazing) blended over them.
    for (const pass of picking ? [null] : [false, true]) {
      if (pass) { gl.enable(gl.BLEND); gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA); gl.depthMask(false); }
      for (const mesh of this.meshes) {
        if (!mesh.count) continue;
        gl.bindVertexArray(mesh.vao);
        for (const p of mesh.primitives) {
          if (pass !== null && pass !== p.colour[3] < 1) continue;
          gl.uniform4fv(this.uniforms.base, p.colour);
          gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, p.indices);
          gl.drawElementsInstanced(gl.TRIANGLES, p.count, gl.UNSIGNED_INT, 0, mesh.count);
        }
      }
      gl.disable(gl.BLEND);
      gl.depthMask(true);
    }
    gl.bindVertexArray(null);
  }

  draw() {
    const canvas = this.canvas;
    const scale = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * scale);
    const height = Math.round(canvas.clientHeight * scale);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    this.gl.viewport(0, 0, width, height);
    this.#render(false);
  }

  // The element under canvas pixel (x, y) in CSS pixels, or null.
  pick(x, y) {
    const gl = this.gl;
    const { width, height } = this.canvas;
    const scale = window.devicePixelRatio || 1;
    const fb = gl.createFramebuffer();
    const colour = gl.createRenderbuffer();
    const depth = gl.createRenderbuffer();
    gl.bindRenderbuffer(gl.RENDERBUFFER, colour);
    gl.renderbufferStorage(gl.RENDERBUFFER, gl.RGBA8, width, height);
    gl.bindRenderbuffer(gl.RENDERBUFFER, depth);
    gl.renderbufferStorage(gl.RENDERBUFFER, gl.DEPTH_COMPONENT24, width, height);
    gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
    gl.framebufferRenderbuffer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.RENDERBUFFER, colour);
    gl.framebufferRenderbuffer(gl.FRAMEBUFFER, gl.DEPTH_ATTACHMENT, gl.RENDERBUFFER, depth);
    this.#render(true);
    const pixel = new Uint8Array(4);
    gl.readPixels(Math.round(x * scale), height - Math.round(y * scale) - 1, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, pixel);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.deleteFramebuffer(fb);
    gl.deleteRenderbuffer(colour);
    gl.deleteRenderbuffer(depth);
    const id = pixel[0] + (pixel[1] << 8) + (pixel[2] << 16);
    return id ? this.elements[id - 1]?.guid ?? null : null;
  }

  #controls() {
    const canvas = this.canvas;
    let drag = null;
    canvas.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: false, pan: e.button === 2 || e.shiftKey };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.pan) this.pan(dx, dy);
      else this.orbit(dx * 0.01, dy * 0.01);
    });
    canvas.addEventListener("pointerup", (e) => {
      if (drag && !drag.moved && this.onpick) {
        const box = canvas.getBoundingClientRect();
        this.onpick(this.pick(e.clientX - box.left, e.clientY - box.top));
      }
      drag = null;
    });
    canvas.addEventListener("contextmenu", (e) => e.preventDefault());
    canvas.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(Math.exp(e.deltaY * 0.001)); }, { passive: false });
    canvas.addEventListener("keydown", (e) => {
      const keys = {
        ArrowLeft: () => this.orbit(-0.1, 0), ArrowRight: () => this.orbit(0.1, 0),
        ArrowUp: () => this.orbit(0, -0.1), ArrowDown: () => this.orbit(0, 0.1),
        "+": () => this.zoom(0.8), "=": () => this.zoom(0.8), "-": () => this.zoom(1.25),
        Home: () => { this.#frame(); this.draw(); },
      };
      if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
    });
  }

  orbit(dyaw, dpitch) {
    this.camera.yaw -= dyaw;
    this.camera.pitch = Math.max(-1.5, Math.min(1.5, this.camera.pitch + dpitch));
    this.draw();
  }

  zoom(factor) {
    this.camera.distance = Math.max(0.1, this.camera.distance * factor);
    this.draw();
  }

  pan(dx, dy) {
    const { yaw } = this.camera;
    const step = this.camera.distance / Math.max(this.canvas.clientHeight, 1);
    const right = [Math.cos(yaw), 0, -Math.sin(yaw)];
    const t = this.camera.target;
    this.camera.target = [t[0] - right[0] * dx * step, t[1] + dy * step, t[2] - right[2] * dx * step];
    this.draw();
  }
}
